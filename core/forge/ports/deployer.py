"""DeployerStatus: what Argo CD says about one Application (DESIGN §5), and the GitOps history it is judged by.

The controller decides when a deployment is ``active`` from two answers:

- :class:`DeployerStatus` reads the Application's ``status``: ``sync`` (``Synced`` / ``OutOfSync``
  at ``revision``, the GitOps commit Argo CD compared the cluster with), ``health`` (``Healthy``,
  ``Progressing``, ``Degraded``…, with Argo CD's message) and the last sync operation
  (``operationState``: phase, message, ``syncResult.revision``). An Application that does not
  exist (yet: the environment's app-of-apps creates it after the pointer commit) is
  ``NotFoundError``; the API unreachable is ``TransientError``; credentials refused are
  ``PermanentError``.
- :class:`RevisionHistory` says whether such a revision *contains* the pointer commit (is it, or
  a descendant of it on the GitOps branch), because Argo CD reports the branch head it compared
  at, which is often a later commit of another app.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["ApplicationStatus", "DeployerStatus", "Health", "OperationPhase", "RevisionHistory", "Sync"]


class Sync(StrEnum):
    """``status.sync.status`` (anything else reads ``Unknown``)."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class Health(StrEnum):
    """``status.health.status`` (anything else reads ``Unknown``)."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class OperationPhase(StrEnum):
    """``status.operationState.phase`` (anything else reads ``Unknown``)."""

    RUNNING = "Running"
    TERMINATING = "Terminating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class ApplicationStatus:
    """One Application's state as Argo CD last recorded it (fields absent there are ``None`` / ``Unknown``)."""

    name: str
    sync: Sync = Sync.UNKNOWN
    revision: str | None = None
    """``status.sync.revision``: the GitOps commit the live state was compared with."""
    health: Health = Health.UNKNOWN
    health_message: str | None = None
    operation: OperationPhase | None = None
    """``status.operationState.phase``; ``None`` when no sync ever ran."""
    operation_message: str | None = None
    operation_revision: str | None = None
    """``status.operationState.syncResult.revision``: the commit the last sync applied."""


class DeployerStatus(Protocol):
    """Argo CD application health and sync state."""

    async def application(self, name: str) -> ApplicationStatus:
        """The Application ``name``; ``NotFoundError`` when it does not exist, ``TransientError`` when
        the API cannot be reached, ``PermanentError`` when it refuses our credentials."""


class RevisionHistory(Protocol):
    """Ancestry on the GitOps branch."""

    async def contains(self, revision: str, commit: str) -> bool:
        """Whether ``revision`` is ``commit`` or one of its descendants; False for a revision the remote
        does not have. ``TransientError`` when the remote cannot be reached."""

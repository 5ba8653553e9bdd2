"""DeployerStatus from Argo CD ``Application`` objects read through the Kubernetes API (DESIGN §5).

``GET /apis/argoproj.io/v1alpha1/namespaces/<namespace>/applications/<name>`` (the Application CRD
Argo CD itself writes its status to), not the Argo CD API server: the controller needs no Argo CD
account, only ``get`` on ``applications.argoproj.io`` in Argo CD's namespace, and both clusters and
tests speak the plain Kubernetes API. The fields read (all optional; a missing one reads
``Unknown`` / ``None``)::

    status.sync.status, status.sync.revision
    status.health.status, status.health.message
    status.operationState.phase, .message, .syncResult.revision

Errors come from :mod:`forge.adapters.k8s_client`: 404 ``NotFoundError`` (the Application does not
exist yet), 401/403 ``PermanentError``, the API down ``TransientError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from forge.adapters.k8s_client import KubeClient
from forge.ports.deployer import ApplicationStatus, Health, OperationPhase, Sync
from forge.settings import ArgoCDSettings

__all__ = ["GROUP", "PLURAL", "VERSION", "ArgoCDApplications", "application_status"]

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"

_E = TypeVar("_E", bound=StrEnum)


class ArgoCDApplications:
    """Argo CD Applications of one namespace."""

    def __init__(self, client: KubeClient, *, namespace: str = "argocd"):
        self._client = client
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: ArgoCDSettings) -> ArgoCDApplications:
        return cls(KubeClient.connect(settings), namespace=settings.namespace)

    async def application(self, name: str) -> ApplicationStatus:
        found = await self._client.custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return application_status(name, found)

    async def close(self) -> None:
        await self._client.close()


def application_status(name: str, application: Mapping[str, Any]) -> ApplicationStatus:
    """The typed status of one Application object as the API server returned it."""
    status = _map(application.get("status"))
    sync, health, operation = _map(status.get("sync")), _map(status.get("health")), _map(status.get("operationState"))
    return ApplicationStatus(
        name=name,
        sync=_enum(Sync, sync.get("status"), Sync.UNKNOWN),
        revision=_text(sync.get("revision")),
        health=_enum(Health, health.get("status"), Health.UNKNOWN),
        health_message=_text(health.get("message")),
        operation=_enum(OperationPhase, operation.get("phase"), OperationPhase.UNKNOWN) if operation else None,
        operation_message=_text(operation.get("message")),
        operation_revision=_text(_map(operation.get("syncResult")).get("revision")),
    )


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _enum(kind: type[_E], value: Any, default: _E) -> _E:
    try:
        return kind(value)
    except ValueError:
        return default

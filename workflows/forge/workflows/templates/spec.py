"""What :func:`~forge.workflows.templates.build.build_template` needs to know about one run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from forge.domain.discovery import DiscoveryResult
from forge.domain.messages import DEFAULT_POOL
from forge.settings import DEFAULT_STEP_IMAGE

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL_PREFIX",
    "NATS_PASSWORD_KEY",
    "NATS_URL_KEY",
    "NATS_USER_KEY",
    "StepKey",
    "TemplateSpec",
]

DEFAULT_IMAGE = DEFAULT_STEP_IMAGE
LABEL_PREFIX = "forge.projectcatalyst.io"
NATS_URL_KEY = "nats-url"
NATS_USER_KEY = "nats-user"
NATS_PASSWORD_KEY = "FORGE_NATS__PASSWORD"  # noqa: S105 - the key of the Secret holding it

StepKey = tuple[str, str, str]
"""``(phase, project, step)``"""


@dataclass(frozen=True, kw_only=True, eq=False)
class TemplateSpec:
    """One run's inputs to the WorkflowTemplate builder.

    ``step_ids`` maps every ``(phase, project, step)`` of every affected project to the id of its
    ``StepExecution`` row (it travels in the CI payload). ``nats_config_map`` names the ConfigMap
    in ``namespace`` whose ``nats-url`` and ``nats-user`` keys the step container receives as
    ``FORGE_NATS__URL`` and ``FORGE_NATS__USER``, ``nats_secret`` the Secret whose ``FORGE_NATS__PASSWORD``
    it receives (the step's NATS user, ``forge-step``: forge.jobs.nats_permissions).
    """

    run_id: UUID
    repository: str
    commit_sha: str
    branch: str | None
    clone_url: str
    triggered_by: str = "anonymous"
    """Who the run is for; its releases record them as ``created_by``."""
    granted_secrets: frozenset[str] = frozenset()
    """The secret names an operator granted the repository (``Repository.secrets``); each CI payload
    carries those its step names."""
    pool: str = DEFAULT_POOL
    """The repository's worker pool (``Repository.pool``): every job of the run is published on it."""
    discovery: DiscoveryResult
    step_ids: Mapping[StepKey, UUID]
    image: str = DEFAULT_IMAGE
    namespace: str = "forge"
    parallelism: int = 100
    service_account: str | None = None
    nats_config_map: str = "forge-step"
    nats_secret: str = "forge-nats-step"  # noqa: S105 - the name of the Secret holding it
    active_deadline_seconds: int = 86400
    ttl_seconds_after_completion: int = 86400

"""What the API's handlers need, chosen once by the composition root (``__main__.build``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litestar.di import NamedDependency

from forge.ports import (
    Database,
    ExecutionStore,
    IdentityProvider,
    MessageBus,
    ObjectStore,
    RepositoryStore,
    RunStore,
    SecretProvider,
)
from forge.ports.changes import ChangeFeed
from forge.ports.limits import RateLimiter
from forge.ports.store import ApprovalStore, DeploymentStore, ReleaseStore

__all__ = ["ApiServices", "ClonePolicy", "Services"]


@dataclass(frozen=True, slots=True)
class ClonePolicy:
    """Which clone URLs a registration may name (``FORGE_API__ALLOW_LOCAL_CLONE_URLS``)."""

    allow_local: bool = False
    """Local absolute paths and loopback/private hosts (the embedded platform's mirrors and daemons)."""
    own_dirs: tuple[Path, ...] = ()
    """The platform's own directories (git cache, work, secrets): never a clone URL."""


@dataclass(frozen=True, slots=True)
class ApiServices:
    database: Database
    repositories: RepositoryStore
    runs: RunStore
    executions: ExecutionStore
    """Read only: the controller is the one writer of executions."""
    releases: ReleaseStore
    """Read only: the controller is the one writer of releases."""
    bus: MessageBus
    objects: ObjectStore
    secrets: SecretProvider
    """Resolves repositories' webhook secrets (``Repository.webhook_secret_ref``)."""
    feed: ChangeFeed | None = None
    """Wakes run watchers (``GET /v1/runs/{id}/events``); without one they read every second."""
    clones: ClonePolicy = ClonePolicy()
    """Remote clone URLs only, unless the settings allow local ones."""
    identity: IdentityProvider | None = None
    """Verifies bearer tokens (``forge.api.auth``); without one every protected route answers 401."""
    deployments: DeploymentStore | None = None
    """Deployment requests and reads (``/v1/deployments``); without one those routes answer 503."""
    approvals: ApprovalStore | None = None
    """Approvals (``/v1/approvals``); without one those routes answer 503."""
    rate_limiter: RateLimiter | None = None
    """Where rate-limit buckets live (PostgreSQL: one limit across replicas); ``None``: in this process."""


Services = NamedDependency[ApiServices]
"""How handlers ask for the services (an explicit Litestar dependency)."""

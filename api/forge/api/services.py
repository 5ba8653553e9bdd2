"""What the API's handlers need, chosen once by the composition root (``__main__.build``)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.di import NamedDependency

from forge.ports import Database, ExecutionStore, MessageBus, ObjectStore, RepositoryStore, RunStore, SecretProvider
from forge.ports.changes import ChangeFeed

__all__ = ["ApiServices", "Services"]


@dataclass(frozen=True, slots=True)
class ApiServices:
    database: Database
    repositories: RepositoryStore
    runs: RunStore
    executions: ExecutionStore
    """Read only: the controller is the one writer of executions."""
    bus: MessageBus
    objects: ObjectStore
    secrets: SecretProvider
    """Resolves repositories' webhook secrets (``Repository.webhook_secret_ref``)."""
    feed: ChangeFeed | None = None
    """Wakes run watchers (``GET /v1/runs/{id}/events``); without one they read every second."""


Services = NamedDependency[ApiServices]
"""How handlers ask for the services (an explicit Litestar dependency)."""

"""Database: PostgreSQL is the system of record (DESIGN §4). Every write is idempotent by a natural key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from forge.domain.entities import PipelineRun, Repository, Trigger
from forge.domain.status import Status

__all__ = ["NewRepository", "NewRun", "Page", "RunFilter", "RunStore"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class NewRepository:
    name: str
    clone_url: str
    default_branch: str = "main"
    webhook_secret_ref: str | None = None


@dataclass(frozen=True, slots=True)
class NewRun:
    repository: str
    commit_sha: str
    branch: str | None = None
    base_sha: str | None = None
    trigger: Trigger = Trigger.MANUAL
    triggered_by: str = "anonymous"
    github_context: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    repository: str | None = None
    branch: str | None = None
    status: Status | None = None
    commit_sha: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RunStore(Protocol):
    async def migrate(self) -> list[str]:
        """Apply pending migrations in order (one at a time across processes); names applied."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def register_repository(self, new: NewRepository) -> tuple[Repository, bool]:
        """Insert, or update clone_url/default branch of, the repository; True when created."""

    async def get_repository(self, name: str) -> Repository:
        """``NotFoundError`` when unknown."""

    async def list_repositories(self, *, limit: int, offset: int) -> Page[Repository]: ...

    async def create_run(self, new: NewRun) -> tuple[PipelineRun, bool]:
        """Idempotent on (repository, commit_sha): returns the existing run and False on a repeat.

        ``NotFoundError`` when the repository is not registered, ``ConflictError`` when disabled.
        """

    async def get_run(self, run_id: UUID) -> PipelineRun: ...

    async def list_runs(self, flt: RunFilter, *, limit: int, offset: int) -> Page[PipelineRun]: ...

    async def claim_discovery(self, *, limit: int) -> list[PipelineRun]:
        """Atomically move runs whose discovery is ``pending`` to ``running`` and return them.

        Concurrent controllers never claim the same run (``FOR UPDATE SKIP LOCKED``).
        """

    async def runs_discovering(self) -> list[PipelineRun]:
        """Runs whose discovery is ``running`` (to resume after a controller restart)."""

    async def record_discovery(self, run_id: UUID, discovery: dict[str, Any], object_key: str) -> PipelineRun:
        """Store the discovery result; the discovery status becomes ``success``."""

    async def fail_discovery(self, run_id: UUID, error: str) -> PipelineRun:
        """The discovery status and the run become ``failed`` with ``error``."""

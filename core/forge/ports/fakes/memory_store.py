"""Every store port (``Database``, ``RepositoryStore``, ``RunStore``, ``ExecutionStore``, ``ReleaseStore``) in
memory, for tests and a one-process platform: no PostgreSQL, same behaviour.

It passes the store compliance suite (``tests/integration/store``) next to ``PostgresStore`` and
follows its rules one for one: the natural keys that make writes idempotent, the schema's checks
(``InvalidInputError`` naming the constraint), ``NotFoundError``/``ConflictError`` with the same
messages, the orderings, ``now()`` stamps and the roll-up of step events. Each call runs without
awaiting after its first checkpoint, so it is one transaction; concurrent callers never share a
claim. ``MemoryStore()`` is a private database; ``store.connect()`` opens another connection to the
same one (two processes on one database).

``available = False`` or ``fail_with(error)`` stands for PostgreSQL being down: every call of every
connection raises ``ServiceUnavailableError`` (checks PostgresStore makes before touching the
database still come first) until ``available = True``. A closed connection is unavailable too.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun, Repository, StepExecution
from forge.domain.events import StepEvent
from forge.domain.messages import DEFAULT_POOL, check_pool
from forge.domain.plan import plan_executions
from forge.domain.status import Status
from forge.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.fakes import _memory_json as documents
from forge.ports.fakes import _memory_runs as runs
from forge.ports.fakes._memory_changes import changes_since, last_change, record_changes
from forge.ports.fakes._memory_deployments import DeploymentTables, MemoryDeployments
from forge.ports.fakes._memory_executions import (
    apply_events,
    create_executions,
    read_executions,
    roll_up_tasks,
    step_change,
)
from forge.ports.fakes._memory_releases import ReleaseTables
from forge.ports.fakes._memory_rows import (
    REPO_NAME,
    Clock,
    RepositoryRow,
    RunRow,
    StepRow,
    Tables,
    check_text,
    check_violation,
    repository_entity,
    run_entity,
    step_entity,
)
from forge.ports.store import (
    JsonDocument,
    NewRepository,
    NewRun,
    Page,
    RunChange,
    RunExecutions,
    RunFilter,
    RunSnapshot,
    check_claim,
    ensure_same_registration,
    secret_grant,
)

__all__ = ["MAX_PAGE", "MAX_STEPS_PAGE", "MemoryStore"]

#: As ``PostgresStore``.
MAX_PAGE = 1000
MAX_STEPS_PAGE = 10_000
_ENDINGS = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})
#: ``repositories_secrets_names`` of migration 0007: at most 100 names of ``[A-Z_][A-Z0-9_]*``.
_SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _granted_names_ok(names: Sequence[str]) -> bool:
    return len(names) <= 100 and all(_SECRET_NAME.fullmatch(name) for name in names)


def _pool_ok(pool: str) -> bool:
    """``repositories_pool_name`` (migration 0011)."""
    try:
        check_pool(pool)
    except ValueError:
        return False
    return True


class _Database:
    """What every connection shares: the tables and whether PostgreSQL is up."""

    def __init__(self, clock: Clock) -> None:
        self.tables = Tables(clock)
        self.releases = ReleaseTables()
        self.deployments = DeploymentTables()
        self.failure: ServiceUnavailableError | None = None
        self.down = False


class MemoryStore(MemoryDeployments):
    """Every store port in memory; ``clock`` (UTC datetimes) replaces the wall clock of ``now()``."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None, _database: _Database | None = None) -> None:
        self._db = _database or _Database(Clock(clock))
        self._t = self._db.tables
        self._rt = self._db.releases
        self._dt = self._db.deployments
        self._closed = False

    def connect(self) -> MemoryStore:
        """Another connection to the same database."""
        return MemoryStore(_database=self._db)

    # -- PostgreSQL down (shared by every connection) -------------------------------------------------

    @property
    def available(self) -> bool:
        return not self._db.down

    @available.setter
    def available(self, value: bool) -> None:
        self._db.down = not value
        if value:
            self._db.failure = None

    def fail_with(self, error: ServiceUnavailableError) -> None:
        """Every call raises (a copy of) ``error`` until ``available = True``."""
        self._db.failure = error
        self._db.down = True

    # -- test hooks, not part of the ports (what a test does with SQL on PostgreSQL) ------------------

    def testing_set_repository_enabled(self, name: str, enabled: bool) -> None:
        row = self._t.repositories[self._t.repository_by_name[name]]
        row.enabled, row.updated_at = enabled, self._t.clock.now()

    def testing_change_listeners(self) -> list[Callable[[UUID], None]]:
        """What ``MemoryChangeFeed`` LISTENs with: called with the run id of every committed change."""
        return self._t.change_listeners

    def testing_set_run_status(self, run_id: UUID, status: Status) -> None:
        """Set the status alone, as ``UPDATE pipeline_runs SET status = ...`` would."""
        row = self._t.runs[run_id]
        row.status, row.updated_at = status, self._t.clock.now()

    # -- Database -------------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Nothing to apply: memory always has the latest schema."""
        await self._enter("migrating the database")
        return []

    async def ping(self) -> None:
        await self._enter("ping")

    async def close(self) -> None:
        self._closed = True

    # -- repositories ---------------------------------------------------------------------------------

    async def register_repository(self, new: NewRepository) -> tuple[Repository, bool]:
        what = f"registering repository {new.name!r}"
        now = await self._enter(what)
        secrets = secret_grant(new.secrets or ())
        pool = DEFAULT_POOL if new.pool is None else new.pool
        check_text(what, new.name, new.clone_url, new.default_branch, new.webhook_secret_ref, pool, *secrets)
        for constraint, ok in (
            ("repositories_clone_url_present", new.clone_url != ""),
            ("repositories_default_branch_present", new.default_branch != ""),
            ("repositories_name_format", REPO_NAME.fullmatch(new.name) is not None and len(new.name) <= 200),
            ("repositories_secrets_names", _granted_names_ok(secrets)),
            ("repositories_pool_name", _pool_ok(pool)),
        ):
            if not ok:
                raise check_violation(what, "repositories", constraint)
        existing = self._t.repository_by_name.get(new.name)
        if existing is not None:
            row = self._t.repositories[existing]
            ensure_same_registration(repository_entity(row), new)
            return repository_entity(row), False
        row = RepositoryRow(uuid4(), new.name, new.clone_url, new.default_branch, new.webhook_secret_ref, now, now)
        row.secrets, row.pool = secrets, pool
        self._t.repositories[row.id] = row
        self._t.repository_by_name[row.name] = row.id
        return repository_entity(row), True

    async def get_repository(self, name: str) -> Repository:
        what = f"reading repository {name!r}"
        await self._enter(what)
        check_text(what, name)
        found = self._t.repository_by_name.get(name)
        if found is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        return repository_entity(self._t.repositories[found])

    async def set_repository_secrets(self, name: str, secrets: Sequence[str]) -> Repository:
        what = f"granting secrets to repository {name!r}"
        now = await self._enter(what)
        grant = secret_grant(secrets)
        check_text(what, name, *grant)
        found = self._t.repository_by_name.get(name)
        if found is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        if not _granted_names_ok(grant):
            raise check_violation(what, "repositories", "repositories_secrets_names")
        row = self._t.repositories[found]
        row.secrets, row.updated_at = grant, now
        return repository_entity(row)

    async def update_repository(
        self, name: str, *, secrets: Sequence[str] | None = None, pool: str | None = None
    ) -> Repository:
        what = f"updating repository {name!r}"
        now = await self._enter(what)
        grant = None if secrets is None else secret_grant(secrets)
        check_text(what, name, pool, *(grant or ()))
        found = self._t.repository_by_name.get(name)
        if found is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        if grant is not None and not _granted_names_ok(grant):
            raise check_violation(what, "repositories", "repositories_secrets_names")
        if pool is not None and not _pool_ok(pool):
            raise check_violation(what, "repositories", "repositories_pool_name")
        row = self._t.repositories[found]
        row.secrets = row.secrets if grant is None else grant
        row.pool = row.pool if pool is None else pool
        row.updated_at = now
        return repository_entity(row)

    async def list_repositories(self, *, limit: int, offset: int) -> Page[Repository]:
        _check_page(limit, offset)
        await self._enter("listing repositories")
        rows = sorted(self._t.repositories.values(), key=lambda r: r.name)
        return Page([repository_entity(r) for r in rows[offset : offset + limit]], len(rows), limit, offset)

    async def pools(self) -> list[str]:
        await self._enter("listing the pools of repositories")
        return sorted({r.pool for r in self._t.repositories.values()})

    # -- runs -----------------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[PipelineRun, bool]:
        what = f"creating a run of {new.repository}@{new.commit_sha}"
        row, created = runs.insert_run(self._t, new, await self._enter(what), what)
        return self._entity(row), created

    async def get_run(self, run_id: UUID) -> PipelineRun:
        await self._enter(f"reading run {run_id}")
        return self._entity(self._row(run_id))

    async def list_runs(self, flt: RunFilter, *, limit: int, offset: int) -> Page[PipelineRun]:
        _check_page(limit, offset)
        tests = runs.run_filter(flt)
        await self._enter("listing runs")
        rows = runs.filter_runs(self._t, tests, "listing runs")
        return Page([self._entity(r) for r in rows[offset : offset + limit]], len(rows), limit, offset)

    async def run_json(self, run_id: UUID) -> JsonDocument:
        await self._enter(f"reading run {run_id}")
        return documents.run_json(self._t, self._row(run_id))

    async def runs_json(self, flt: RunFilter, *, limit: int, offset: int) -> JsonDocument:
        _check_page(limit, offset)
        tests = runs.run_filter(flt)
        await self._enter("listing runs")
        rows = runs.filter_runs(self._t, tests, "listing runs")
        return documents.runs_json(self._t, rows[offset : offset + limit], len(rows), limit, offset)

    # -- discovery ------------------------------------------------------------------------------------

    async def claim_discovery(self, *, limit: int) -> list[PipelineRun]:
        if limit < 1:
            raise InvalidInputError(f"claim_discovery: limit must be at least 1, got {limit}")
        now = await self._enter("claiming discovery work")
        return [self._entity(r) for r in runs.claim_discovery(self._t, limit, now)]

    async def runs_discovering(self) -> list[PipelineRun]:
        await self._enter("listing runs in discovery")
        return self._unfinished(r for r in self._t.runs.values() if r.discovery_status == Status.RUNNING)

    async def record_discovery(self, run_id: UUID, discovery: DiscoveryResult, object_key: str) -> PipelineRun:
        what = f"recording the discovery of run {run_id}"
        now = await self._enter(what)
        row = self._row(run_id)
        runs.record_discovery(self._t, row, discovery, object_key, now, what)
        return self._entity(row)

    async def fail_discovery(self, run_id: UUID, error: str, *, code: str) -> PipelineRun:
        what = f"failing the discovery of run {run_id}"
        now = await self._enter(what)
        row = self._row(run_id)
        runs.fail_discovery(self._t, row, error, code, now, what)
        return self._entity(row)

    # -- execution control (the controller) -----------------------------------------------------------

    async def set_workflow(self, run_id: UUID, workflow_name: str, *, replaces: str | None = None) -> PipelineRun:
        if not workflow_name:
            raise InvalidInputError(f"run {run_id}: the workflow name must not be empty")
        what = f"recording the workflow of run {run_id}"
        now = await self._enter(what)
        row = self._row(run_id)
        runs.set_workflow(self._t, row, workflow_name, replaces, now, what)
        return self._entity(row)

    async def claim_execution(
        self, *, limit: int, claimer: str, lease: float, per_repository: int = 0
    ) -> list[PipelineRun]:
        if limit < 1:
            raise InvalidInputError(f"claim_execution: limit must be at least 1, got {limit}")
        check_claim("claim_execution", claimer, lease)
        if per_repository < 0:
            raise InvalidInputError(f"claim_execution: per_repository must be 0 or more, got {per_repository}")
        now = await self._enter("claiming runs to execute")
        claimed = runs.claim_execution(self._t, limit, claimer, float(lease), now, per_repository)
        return [self._entity(r) for r in claimed]

    async def renew_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("renew_execution_claims", claimer)
        if not run_ids:
            return set()
        now = await self._enter("renewing claims on runs to execute")
        return runs.renew_execution_claims(self._t, run_ids, claimer, now)

    async def release_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("release_execution_claims", claimer)
        if not run_ids:
            return set()
        now = await self._enter("releasing claims on runs to execute")
        return runs.release_execution_claims(self._t, run_ids, claimer, now)

    async def runs_executing(self) -> list[PipelineRun]:
        await self._enter("listing executing runs")
        rows = self._t.runs.values()
        return self._unfinished(r for r in rows if r.status == Status.RUNNING and r.workflow_name is not None)

    async def finish_run(
        self, run_id: UUID, status: Status, *, error: str | None = None, code: str | None = None
    ) -> PipelineRun:
        if status not in _ENDINGS:
            raise InvalidInputError(
                f"run {run_id}: a run finishes as success, failed or cancelled, not {status}",
                details={"run_id": str(run_id), "requested": str(status)},
            )
        what = f"finishing run {run_id}"
        now = await self._enter(what)
        return runs.finish_run(self._t, self._row(run_id), status, error, code, now, what)

    async def request_cancel(self, run_id: UUID) -> PipelineRun:
        now = await self._enter(f"requesting the cancel of run {run_id}")
        row = self._row(run_id)
        runs.request_cancel(self._t, row, now)
        return self._entity(row)

    async def runs_cancel_requested(self) -> list[PipelineRun]:
        await self._enter("listing runs to cancel")
        asked = [r for r in self._t.runs.values() if r.cancel_requested_at is not None and r.status in runs.UNFINISHED]
        asked.sort(key=lambda r: (r.cancel_requested_at, r.id))
        return [self._entity(r) for r in asked]

    # -- executions (phases, tasks, steps) ------------------------------------------------------------

    async def create_executions(self, run_id: UUID, discovery: DiscoveryResult) -> RunExecutions:
        plan = plan_executions(discovery)
        what = f"creating the executions of run {run_id}"
        now = await self._enter(what)
        row = self._row(run_id)
        if not self._t.phases_of.get(run_id):
            create_executions(self._t, row, plan, now, what)
        return read_executions(self._t, run_id)

    async def get_executions(self, run_id: UUID) -> RunExecutions:
        await self._enter(f"reading the executions of run {run_id}")
        self._row(run_id)
        return read_executions(self._t, run_id)

    async def executions_json(self, run_id: UUID, *, limit: int, offset: int) -> JsonDocument:
        _check_page(limit, offset, maximum=MAX_STEPS_PAGE)
        await self._enter(f"reading the executions of run {run_id}")
        self._row(run_id)
        return documents.executions_json(self._t, run_id, limit, offset)

    async def get_step(self, step_id: UUID) -> StepExecution:
        await self._enter(f"reading step {step_id}")
        return step_entity(self._step(step_id))

    async def apply_step_events(self, events: Sequence[StepEvent]) -> int:
        if not events:
            return 0
        what = f"applying {len(events)} step event(s)"
        now = await self._enter(what)
        return apply_events(self._t, events, now, what)

    async def fail_step(self, step_id: UUID, message: str | None) -> StepExecution:
        what = f"failing step {step_id}"
        now = await self._enter(what)
        row = self._step(step_id)
        if row.status.is_final:
            return step_entity(row)
        check_text(what, message)
        row.status = Status.FAILED
        row.message = message if message is not None else row.message
        row.started_at = row.started_at or now
        row.completed_at = row.updated_at = now
        record_changes(self._t, [step_change(self._t, row), *roll_up_tasks(self._t, [row.task_id], now)], now)
        return step_entity(row)

    # -- watching runs (GET /v1/runs/{id}/events) -----------------------------------------------------

    async def changes_since(self, run_id: UUID, after: int, *, limit: int) -> list[RunChange]:
        _check_page(limit, 0)
        await self._enter(f"reading the changes of run {run_id}")
        return changes_since(self._t, run_id, after, limit)

    async def run_snapshot(self, run_id: UUID) -> RunSnapshot:
        await self._enter(f"reading run {run_id} with its executions")
        row = self._row(run_id)
        return RunSnapshot(self._entity(row), read_executions(self._t, run_id), last_change(self._t, run_id))

    # -- helpers --------------------------------------------------------------------------------------

    async def _enter(self, what: str) -> datetime:
        """A checkpoint (other callers run here, as during a round trip), then the transaction's ``now()``."""
        await asyncio.sleep(0)
        if self._closed:
            raise ServiceUnavailableError(f"{what}: PostgreSQL is unavailable: pool is closed", retry_after=1.0)
        if self._db.down:
            if self._db.failure is not None:
                raise copy.copy(self._db.failure).with_traceback(None)
            raise ServiceUnavailableError(
                f"{what}: PostgreSQL is unavailable: connection refused (the memory store is down)", retry_after=1.0
            )
        return self._t.clock.now()

    def _row(self, run_id: UUID) -> RunRow:
        row = self._t.runs.get(run_id)
        if row is None:
            raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
        return row

    def _entity(self, row: RunRow) -> PipelineRun:
        return run_entity(self._t, row)

    def _unfinished(self, rows: Iterable[RunRow]) -> list[PipelineRun]:
        """The unfinished runs among ``rows``, oldest first."""
        return [self._entity(r) for r in runs.oldest_first(r for r in rows if r.status in runs.UNFINISHED)]

    def _step(self, step_id: UUID) -> StepRow:
        row = self._t.steps.get(step_id)
        if row is None:
            raise NotFoundError(f"step {step_id} does not exist", details={"step_id": str(step_id)})
        return row


def _check_page(limit: int, offset: int, *, maximum: int = MAX_PAGE) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidInputError(f"limit must be between 1 and {maximum}, got {limit}", details={"limit": limit})
    if offset < 0:
        raise InvalidInputError(f"offset must not be negative, got {offset}", details={"offset": offset})

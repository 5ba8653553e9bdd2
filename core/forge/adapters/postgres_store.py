"""The store ports (``Database``, ``RepositoryStore``, ``RunStore``, ``ExecutionStore``, ``ReleaseStore``)
on PostgreSQL through one asyncpg pool (DESIGN §4: PostgreSQL is the system of record).

Migrations are the plain SQL files in ``forge/adapters/migrations``, applied in name order, each in its
own transaction under a transaction-scoped advisory lock, and recorded in ``schema_migrations`` — so two
processes starting at once never apply one twice. Status changes go through
``forge.domain.status.ensure_transition``; asyncpg errors become Forge errors in ``translate_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from forge.adapters._postgres_deployments import PostgresDeployments
from forge.adapters._postgres_documents import DocumentReads
from forge.adapters._postgres_executions import (
    apply_events,
    created_changes,
    plan_columns,
    read_executions,
    record_changes,
    roll_up_run,
    roll_up_tasks,
)
from forge.adapters._postgres_releases import PostgresReleases
from forge.adapters._postgres_rows import (
    RUN_COLUMNS,
    init_connection,
    repository_from_row,
    run_from_row,
    step_from_row,
    translate_errors,
)
from forge.adapters._postgres_sql import (
    RUNS,
    SELECT_RUNS,
    SQL_CHANGES_SINCE,
    SQL_CLAIM_DISCOVERY,
    SQL_CLAIM_EXECUTION,
    SQL_CLAIM_EXECUTION_QUOTA,
    SQL_EXECUTIONS_JSON,
    SQL_EXECUTIONS_VERSION,
    SQL_FAIL_DISCOVERY,
    SQL_INSERT_PHASES,
    SQL_INSERT_RUN,
    SQL_INSERT_STEPS,
    SQL_INSERT_TASKS,
    SQL_LAST_CHANGE,
    SQL_LOCK_RUN,
    SQL_LOCK_STEPS_OF_RUN,
    SQL_PRUNE_CHANGES,
    SQL_RECORD_DISCOVERY,
    SQL_RELEASE_EXECUTION_CLAIMS,
    SQL_RENEW_EXECUTION_CLAIMS,
    SQL_REQUEST_CANCEL,
    SQL_RUN_JSON,
    SQL_RUN_OF_STEP,
    SQL_RUN_VERSION,
    SQL_RUNS_JSON,
    SQL_SET_RUN_STATUS,
    SQL_SET_WORKFLOW,
    SQL_SETTLE_DISCOVERY,
    SQL_SWEEP_STEPS_RETURNING,
    UNFINISHED,
)
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun, Repository, StepExecution
from forge.domain.events import StepEvent
from forge.domain.messages import DEFAULT_POOL
from forge.domain.plan import plan_executions
from forge.domain.status import Status, ensure_transition
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.changes import CHANGES_KEPT, change_of, run_change
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

__all__ = ["MAX_PAGE", "MAX_STEPS_PAGE", "PostgresStore", "migration_files"]

MAX_PAGE = 1000
#: The most steps one ``executions_json`` page holds.
MAX_STEPS_PAGE = 10_000
#: ``pg_advisory_xact_lock`` key serialising migrations across processes ("forge" in ASCII).
_MIGRATION_LOCK = 0x666F726765
#: ``pg_advisory_xact_lock`` key serialising execution claims under a per-repository quota ("claim").
_CLAIM_LOCK = 0x636C61696D

#: ``RunFilter`` fields and the columns they compare with equality.
_FILTER_COLUMNS = {
    "repository": "repo.name",
    "branch": "r.branch",
    "status": "r.status",
    "commit_sha": "r.commit_sha",
    "trigger": "r.trigger",
    "triggered_by": "r.triggered_by",
    "discovery_status": "r.discovery_status",
}


def migration_files() -> list[tuple[str, str]]:
    """(name, SQL) of every migration, in the order they apply."""
    folder = resources.files("forge.adapters").joinpath("migrations")
    found = [
        (entry.name, entry.read_text(encoding="utf-8")) for entry in folder.iterdir() if entry.name.endswith(".sql")
    ]
    return sorted(found)


class PostgresStore(PostgresReleases, PostgresDeployments):
    """Every store port on PostgreSQL. Build it with :meth:`connect`; ``close()`` when done."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool
        self._documents = DocumentReads(pool)

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 10.0
    ) -> PostgresStore:
        """Open a pool; ``ServiceUnavailableError`` when PostgreSQL cannot be reached."""
        with translate_errors("connecting to PostgreSQL"):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                init=init_connection,
                reset=_no_session_state,
            )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        with translate_errors("ping"):
            await self._pool.fetchval("SELECT 1")

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        with translate_errors("migrating the database"):
            async with self._pool.acquire() as conn:
                for name, sql in migration_files():
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                        await conn.execute(
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                        )
                        done = await conn.fetchval("SELECT true FROM schema_migrations WHERE name = $1", name)
                        if done:
                            continue
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                        applied.append(name)
        return applied

    # -- repositories ---------------------------------------------------------------------------------

    async def register_repository(self, new: NewRepository) -> tuple[Repository, bool]:
        with translate_errors(f"registering repository {new.name!r}"):
            row = await self._pool.fetchrow(
                """
                INSERT INTO repositories (name, clone_url, default_branch, webhook_secret_ref, secrets, pool)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (name) DO NOTHING
                RETURNING *
                """,
                new.name,
                new.clone_url,
                new.default_branch,
                new.webhook_secret_ref,
                list(secret_grant(new.secrets or ())),
                DEFAULT_POOL if new.pool is None else new.pool,
            )
            if row is not None:
                return repository_from_row(row), True
            row = await self._pool.fetchrow("SELECT * FROM repositories WHERE name = $1", new.name)
        assert row is not None  # repositories are never deleted
        existing = repository_from_row(row)
        ensure_same_registration(existing, new)
        return existing, False

    async def get_repository(self, name: str) -> Repository:
        with translate_errors(f"reading repository {name!r}"):
            row = await self._pool.fetchrow("SELECT * FROM repositories WHERE name = $1", name)
        if row is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        return repository_from_row(row)

    async def set_repository_secrets(self, name: str, secrets: Sequence[str]) -> Repository:
        with translate_errors(f"granting secrets to repository {name!r}"):
            row = await self._pool.fetchrow(
                "UPDATE repositories SET secrets = $2 WHERE name = $1 RETURNING *", name, list(secret_grant(secrets))
            )
        if row is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        return repository_from_row(row)

    async def update_repository(
        self, name: str, *, secrets: Sequence[str] | None = None, pool: str | None = None
    ) -> Repository:
        grant = None if secrets is None else list(secret_grant(secrets))
        with translate_errors(f"updating repository {name!r}"):
            row = await self._pool.fetchrow(
                "UPDATE repositories SET secrets = coalesce($2, secrets), pool = coalesce($3, pool) WHERE name = $1 "
                "RETURNING *",
                name,
                grant,
                pool,
            )
        if row is None:
            raise NotFoundError(f"repository {name!r} is not registered", details={"repository": name})
        return repository_from_row(row)

    async def list_repositories(self, *, limit: int, offset: int) -> Page[Repository]:
        _check_page(limit, offset)
        with translate_errors("listing repositories"):
            rows = await self._pool.fetch(
                "SELECT *, count(*) OVER () AS total FROM repositories ORDER BY name LIMIT $1 OFFSET $2",
                limit,
                offset,
            )
            total = rows[0]["total"] if rows else await self._pool.fetchval("SELECT count(*) FROM repositories")
        return Page([repository_from_row(r) for r in rows], int(total), limit, offset)

    async def pools(self) -> list[str]:
        with translate_errors("listing the pools of repositories"):
            rows = await self._pool.fetch("SELECT DISTINCT pool FROM repositories")
        return sorted(str(r["pool"]) for r in rows)

    # -- runs -----------------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[PipelineRun, bool]:
        ref = new.ref()
        with translate_errors(f"creating a run of {new.repository}@{new.commit_sha}"):
            repo = await self._pool.fetchrow("SELECT id, enabled FROM repositories WHERE name = $1", new.repository)
            if repo is None:
                raise NotFoundError(
                    f"repository {new.repository!r} is not registered; register it before creating runs",
                    details={"repository": new.repository},
                )
            if not repo["enabled"]:
                raise ConflictError(
                    f"repository {new.repository!r} is disabled; enable it to accept runs",
                    details={"repository": new.repository},
                )
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    SQL_INSERT_RUN,
                    repo["id"],
                    new.branch,
                    new.commit_sha,
                    new.base_sha,
                    str(new.trigger),
                    new.triggered_by,
                    new.github_context,
                    new.tag,
                    list(new.release_projects),
                    ref,
                )
                if row is not None:
                    run = run_from_row(row)
                    await record_changes(conn, [run_change(run)])
                    return run, True
            # Lost the race or a repeat: the conflicting row is committed, so this statement sees it.
            row = await self._pool.fetchrow(
                f"{SELECT_RUNS} WHERE r.repository_id = $1 AND r.commit_sha = $2 AND r.ref = $3",
                repo["id"],
                new.commit_sha,
                ref,
            )
        if row is None:  # only if the run was deleted in between
            raise ConflictError(f"run of {new.repository}@{new.commit_sha} vanished while being created")
        return run_from_row(row), False

    async def get_run(self, run_id: UUID) -> PipelineRun:
        with translate_errors(f"reading run {run_id}"):
            row = await self._pool.fetchrow(f"{SELECT_RUNS} WHERE r.id = $1", run_id)
        if row is None:
            raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
        return run_from_row(row)

    async def list_runs(self, flt: RunFilter, *, limit: int, offset: int) -> Page[PipelineRun]:
        _check_page(limit, offset)
        where, args = _run_where(flt)
        n = len(args)
        with translate_errors("listing runs"):
            rows = await self._pool.fetch(
                f"SELECT {RUN_COLUMNS}, count(*) OVER () AS total FROM {RUNS} {where}"  # noqa: S608 - $n only
                f" ORDER BY r.created_at DESC, r.id LIMIT ${n + 1} OFFSET ${n + 2}",
                *args,
                limit,
                offset,
            )
            if rows:
                total = rows[0]["total"]
            else:
                total = await self._pool.fetchval(f"SELECT count(*) FROM {RUNS} {where}", *args)  # noqa: S608
        return Page([run_from_row(r) for r in rows], int(total), limit, offset)

    async def run_json(self, run_id: UUID) -> JsonDocument:
        with translate_errors(f"reading run {run_id}"):
            found = await self._documents.read(("run", run_id), SQL_RUN_VERSION, SQL_RUN_JSON, run_id)
        if found is None:
            raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
        return found

    async def runs_json(self, flt: RunFilter, *, limit: int, offset: int) -> JsonDocument:
        _check_page(limit, offset)
        where, args = _run_where(flt)
        n = len(args)
        sql = SQL_RUNS_JSON.replace("{where}", where).replace("{limit}", f"${n + 1}").replace("{offset}", f"${n + 2}")
        with translate_errors("listing runs"):
            row = await self._pool.fetchrow(sql, *args, limit, offset)
        assert row is not None  # an aggregate over one count row
        return JsonDocument(row["body"], row["version"], int(row["total"]))

    # -- discovery ------------------------------------------------------------------------------------

    async def claim_discovery(self, *, limit: int) -> list[PipelineRun]:
        if limit < 1:
            raise InvalidInputError(f"claim_discovery: limit must be at least 1, got {limit}")
        with translate_errors("claiming discovery work"):
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    SQL_CLAIM_DISCOVERY,
                    limit,
                )
                claimed = [run_from_row(r) for r in rows]
                await record_changes(conn, [run_change(r) for r in claimed])
        return claimed

    async def runs_discovering(self) -> list[PipelineRun]:
        with translate_errors("listing runs in discovery"):
            rows = await self._pool.fetch(
                f"{SELECT_RUNS} WHERE r.discovery_status = 'running' AND r.status IN {UNFINISHED}"
                " ORDER BY r.created_at, r.id"
            )
        return [run_from_row(r) for r in rows]

    async def record_discovery(self, run_id: UUID, discovery: DiscoveryResult, object_key: str) -> PipelineRun:
        with translate_errors(f"recording the discovery of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _lock_run(conn, run_id)
                if current.discovery_status == Status.SUCCESS:
                    if current.discovery_key == object_key:
                        return current  # the same result delivered twice
                    raise ConflictError(
                        f"run {run_id}: discovery already recorded as {current.discovery_key!r}, not {object_key!r}",
                        details={"run_id": str(run_id), "discovery_key": current.discovery_key},
                    )
                ensure_transition(f"run {run_id} discovery", current.discovery_status, Status.SUCCESS)
                row = await conn.fetchrow(SQL_RECORD_DISCOVERY, run_id, discovery.model_dump(mode="json"), object_key)
                assert row is not None
                recorded = run_from_row(row)
                await record_changes(conn, [run_change(recorded)])
        return recorded

    async def fail_discovery(self, run_id: UUID, error: str, *, code: str) -> PipelineRun:
        with translate_errors(f"failing the discovery of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _lock_run(conn, run_id)
                if current.discovery_status == Status.FAILED and current.status == Status.FAILED:
                    return current  # repeat
                ensure_transition(f"run {run_id} discovery", current.discovery_status, Status.FAILED)
                ensure_transition(f"run {run_id}", current.status, Status.FAILED)
                row = await conn.fetchrow(SQL_FAIL_DISCOVERY, run_id, error, code)
                assert row is not None
                failed = run_from_row(row)
                await record_changes(conn, [run_change(failed)])
        return failed

    # -- execution control (the controller) -----------------------------------------------------------

    async def set_workflow(self, run_id: UUID, workflow_name: str, *, replaces: str | None = None) -> PipelineRun:
        if not workflow_name:
            raise InvalidInputError(f"run {run_id}: the workflow name must not be empty")
        with translate_errors(f"recording the workflow of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _lock_run(conn, run_id)
                if current.workflow_name == workflow_name:
                    return current
                if current.workflow_name is not None and current.workflow_name != replaces:
                    raise ConflictError(
                        f"run {run_id} already has workflow {current.workflow_name!r}, not {workflow_name!r}",
                        details={"run_id": str(run_id), "workflow_name": current.workflow_name},
                    )
                if current.status.is_final:
                    raise ConflictError(f"run {run_id} is already {current.status}", details={"run_id": str(run_id)})
                row = await conn.fetchrow(SQL_SET_WORKFLOW, run_id, workflow_name)
                assert row is not None
                updated = run_from_row(row)
                await record_changes(conn, [run_change(updated)])
        return updated

    async def claim_execution(
        self, *, limit: int, claimer: str, lease: float, per_repository: int = 0
    ) -> list[PipelineRun]:
        if limit < 1:
            raise InvalidInputError(f"claim_execution: limit must be at least 1, got {limit}")
        check_claim("claim_execution", claimer, lease)
        if per_repository < 0:
            raise InvalidInputError(f"claim_execution: per_repository must be 0 or more, got {per_repository}")
        with translate_errors("claiming runs to execute"):
            if not per_repository:
                rows = await self._pool.fetch(SQL_CLAIM_EXECUTION, limit, float(lease), claimer)
            else:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
                    rows = await conn.fetch(SQL_CLAIM_EXECUTION_QUOTA, limit, float(lease), claimer, per_repository)
        return [run_from_row(r) for r in rows]

    async def renew_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("renew_execution_claims", claimer)
        if not run_ids:
            return set()
        with translate_errors("renewing claims on runs to execute"):
            rows = await self._pool.fetch(SQL_RENEW_EXECUTION_CLAIMS, list(run_ids), claimer)
        return {row["id"] for row in rows}

    async def release_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("release_execution_claims", claimer)
        if not run_ids:
            return set()
        with translate_errors("releasing claims on runs to execute"):
            rows = await self._pool.fetch(SQL_RELEASE_EXECUTION_CLAIMS, list(run_ids), claimer)
        return {row["id"] for row in rows}

    async def runs_executing(self) -> list[PipelineRun]:
        with translate_errors("listing executing runs"):
            rows = await self._pool.fetch(
                f"{SELECT_RUNS} WHERE r.status = 'running' AND r.workflow_name IS NOT NULL ORDER BY r.created_at, r.id"
            )
        return [run_from_row(r) for r in rows]

    async def finish_run(
        self, run_id: UUID, status: Status, *, error: str | None = None, code: str | None = None
    ) -> PipelineRun:
        if status not in {Status.SUCCESS, Status.FAILED, Status.CANCELLED}:
            raise InvalidInputError(
                f"run {run_id}: a run finishes as success, failed or cancelled, not {status}",
                details={"run_id": str(run_id), "requested": str(status)},
            )
        with translate_errors(f"finishing run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _lock_run(conn, run_id)
                if current.status.is_final and current.status != status:
                    raise ConflictError(
                        f"run {run_id} is already {current.status}",
                        details={"run_id": str(run_id), "from": str(current.status), "to": str(status)},
                    )
                ensure_transition(f"run {run_id}", current.status, status)
                await conn.fetch(SQL_LOCK_STEPS_OF_RUN, run_id)
                swept = await conn.fetch(SQL_SWEEP_STEPS_RETURNING, run_id)
                changes = [change_of(run_id, "step", r["id"], r) for r in swept]
                settled = await conn.execute(SQL_SETTLE_DISCOVERY, run_id)
                changes += await roll_up_run(conn, run_id)
                if current.status == status:
                    if settled != "UPDATE 0":
                        changes.append(run_change(await _lock_run(conn, run_id)))
                    await record_changes(conn, changes)
                    return current
                row = await conn.fetchrow(SQL_SET_RUN_STATUS, run_id, status, error, code)
                assert row is not None
                finished = run_from_row(row)
                await record_changes(conn, [*changes, run_change(finished)])
                await conn.execute(SQL_PRUNE_CHANGES, CHANGES_KEPT.total_seconds())
        return finished

    async def request_cancel(self, run_id: UUID) -> PipelineRun:
        with translate_errors(f"requesting the cancel of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _lock_run(conn, run_id)
                if current.status.is_final:
                    raise ConflictError(
                        f"run {run_id} is already {current.status}",
                        details={"run_id": str(run_id), "run_status": str(current.status)},
                    )
                row = await conn.fetchrow(SQL_REQUEST_CANCEL, run_id)
                if row is None:
                    return current  # asked before
                asked = run_from_row(row)
                await record_changes(conn, [run_change(asked)])
        return asked

    async def runs_cancel_requested(self) -> list[PipelineRun]:
        with translate_errors("listing runs to cancel"):
            rows = await self._pool.fetch(
                f"{SELECT_RUNS} WHERE r.cancel_requested_at IS NOT NULL AND r.status IN {UNFINISHED}"
                " ORDER BY r.cancel_requested_at, r.id"
            )
        return [run_from_row(r) for r in rows]

    # -- executions (phases, tasks, steps) ------------------------------------------------------------

    async def create_executions(self, run_id: UUID, discovery: DiscoveryResult) -> RunExecutions:
        phases, tasks, steps = plan_columns(plan_executions(discovery))
        with translate_errors(f"creating the executions of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                await _lock_run(conn, run_id)  # serialises concurrent creators of this run's rows
                exists = await conn.fetchval("SELECT true FROM phase_executions WHERE run_id = $1 LIMIT 1", run_id)
                if not exists:
                    await conn.execute(SQL_INSERT_PHASES, run_id, *phases)
                    await conn.execute(SQL_INSERT_TASKS, run_id, *tasks)
                    await conn.execute(SQL_INSERT_STEPS, run_id, *steps)
                    await record_changes(conn, await created_changes(conn, run_id))
                return await read_executions(conn, run_id)

    async def get_executions(self, run_id: UUID) -> RunExecutions:
        with translate_errors(f"reading the executions of run {run_id}"):
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                if not await conn.fetchval("SELECT true FROM pipeline_runs WHERE id = $1", run_id):
                    raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
                return await read_executions(conn, run_id)

    async def executions_json(self, run_id: UUID, *, limit: int, offset: int) -> JsonDocument:
        _check_page(limit, offset, maximum=MAX_STEPS_PAGE)
        key = ("executions", run_id, limit, offset)
        with translate_errors(f"reading the executions of run {run_id}"):
            found = await self._documents.read(key, SQL_EXECUTIONS_VERSION, SQL_EXECUTIONS_JSON, run_id, offset, limit)
        if found is None:
            raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
        return found

    async def get_step(self, step_id: UUID) -> StepExecution:
        with translate_errors(f"reading step {step_id}"):
            row = await self._pool.fetchrow("SELECT * FROM step_executions WHERE id = $1", step_id)
        if row is None:
            raise NotFoundError(f"step {step_id} does not exist", details={"step_id": str(step_id)})
        return step_from_row(row)

    async def apply_step_events(self, events: Sequence[StepEvent]) -> int:
        if not events:
            return 0
        with translate_errors(f"applying {len(events)} step event(s)"):
            async with self._pool.acquire() as conn, conn.transaction():
                return await apply_events(conn, events)

    async def fail_step(self, step_id: UUID, message: str | None) -> StepExecution:
        with translate_errors(f"failing step {step_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                run_id = await conn.fetchval(SQL_RUN_OF_STEP, step_id)
                if run_id is not None:  # locked before the step, as every writer of a run's changes does
                    await conn.execute(SQL_LOCK_RUN, run_id)
                row = await conn.fetchrow("SELECT * FROM step_executions WHERE id = $1 FOR UPDATE", step_id)
                if row is None:
                    raise NotFoundError(f"step {step_id} does not exist", details={"step_id": str(step_id)})
                if Status(row["status"]).is_final:
                    return step_from_row(row)
                now = datetime.now(UTC)
                row = await conn.fetchrow(
                    "UPDATE step_executions SET status = 'failed', message = COALESCE($2, message),"
                    " started_at = COALESCE(started_at, $3), completed_at = $3 WHERE id = $1 RETURNING *",
                    step_id,
                    message,
                    now,
                )
                assert row is not None
                changes = [change_of(run_id, "step", step_id, row), *await roll_up_tasks(conn, [row["task_id"]])]
                await record_changes(conn, changes)
        return step_from_row(row)

    # -- watching runs (GET /v1/runs/{id}/events) -----------------------------------------------------

    async def changes_since(self, run_id: UUID, after: int, *, limit: int) -> list[RunChange]:
        _check_page(limit, 0)
        with translate_errors(f"reading the changes of run {run_id}"):
            rows = await self._pool.fetch(SQL_CHANGES_SINCE, run_id, max(after, 0), limit)
        return [_change_from_row(r) for r in rows]

    async def run_snapshot(self, run_id: UUID) -> RunSnapshot:
        with translate_errors(f"reading run {run_id} with its executions"):
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                row = await conn.fetchrow(f"{SELECT_RUNS} WHERE r.id = $1", run_id)
                if row is None:
                    raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
                executions = await read_executions(conn, run_id)
                last = await conn.fetchval(SQL_LAST_CHANGE, run_id)
        return RunSnapshot(run_from_row(row), executions, int(last))


# -- executions: one transaction each, locks taken in the order run -> steps -> tasks -> phases ---------


async def _lock_run(conn: PoolConnectionProxy[asyncpg.Record], run_id: UUID) -> PipelineRun:
    row = await conn.fetchrow(f"{SELECT_RUNS} WHERE r.id = $1 FOR UPDATE OF r", run_id)
    if row is None:
        raise NotFoundError(f"run {run_id} does not exist", details={"run_id": str(run_id)})
    return run_from_row(row)


def _change_from_row(row: asyncpg.Record) -> RunChange:
    return RunChange(
        row["id"], row["run_id"], row["kind"], row["entity_id"], Status(row["status"]), row["body"], row["at"]
    )


async def _no_session_state(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """How a released connection is reset: not at all beyond what asyncpg always does (roll back an open
    transaction). The store keeps no session state (no SET, LISTEN, cursors or session advisory locks),
    so the default ``RESET ALL; UNLISTEN *; ...`` would only cost a second round trip per call."""


def _run_where(flt: RunFilter) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (``$1..$n``) and its arguments of a run filter."""
    conditions = flt.conditions()
    clauses = [f"{_FILTER_COLUMNS[key]} = ${n}" for n, key in enumerate(conditions, start=1)]
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), list(conditions.values())


def _check_page(limit: int, offset: int, *, maximum: int = MAX_PAGE) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidInputError(f"limit must be between 1 and {maximum}, got {limit}", details={"limit": limit})
    if offset < 0:
        raise InvalidInputError(f"offset must not be negative, got {offset}", details={"offset": offset})

"""Pipeline runs of the in-memory store: created, filtered, claimed and moved along as ``PostgresStore``
moves them (``forge.adapters.postgres_store`` and the statements of ``_postgres_sql``).

Each function is the body of one transaction: it checks everything before it changes anything, and
``now`` is the transaction's ``now()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun
from forge.domain.status import Status, ensure_transition
from forge.errors import ConflictError, NotFoundError
from forge.ports.changes import run_change
from forge.ports.fakes._memory_changes import prune_changes, record_changes
from forge.ports.fakes._memory_executions import roll_up_run, stamp, sweep_steps
from forge.ports.fakes._memory_rows import SHA, RunRow, Tables, check_text, check_violation, jsonb, run_entity
from forge.ports.store import NewRun, RunFilter

__all__ = [
    "UNFINISHED",
    "claim_discovery",
    "claim_execution",
    "fail_discovery",
    "filter_runs",
    "finish_run",
    "insert_run",
    "oldest_first",
    "record_discovery",
    "release_execution_claims",
    "renew_execution_claims",
    "request_cancel",
    "run_filter",
    "set_workflow",
]

UNFINISHED = frozenset({Status.PENDING, Status.RUNNING})
_TRIGGERS = frozenset({"push", "pull_request", "tag", "manual"})
_Column = Callable[[Tables, RunRow], str | None]
#: ``RunFilter`` fields and the column each compares (as text) with equality.
_FILTERS: dict[str, _Column] = {
    "repository": lambda t, r: t.repositories[r.repository_id].name,
    "branch": lambda _, r: r.branch,
    "status": lambda _, r: r.status,
    "commit_sha": lambda _, r: r.commit_sha,
    "trigger": lambda _, r: r.trigger,
    "triggered_by": lambda _, r: r.triggered_by,
    "discovery_status": lambda _, r: r.discovery_status,
}


def oldest_first(rows: Iterable[RunRow]) -> list[RunRow]:
    return sorted(rows, key=lambda r: (r.created_at, r.id))


def insert_run(tables: Tables, new: NewRun, now: datetime, what: str) -> tuple[RunRow, bool]:
    """The run of (repository, commit), created unless it exists; True when created."""
    check_text(what, new.repository)
    repo_id = tables.repository_by_name.get(new.repository)
    if repo_id is None:
        raise NotFoundError(
            f"repository {new.repository!r} is not registered; register it before creating runs",
            details={"repository": new.repository},
        )
    if not tables.repositories[repo_id].enabled:
        raise ConflictError(
            f"repository {new.repository!r} is disabled; enable it to accept runs",
            details={"repository": new.repository},
        )
    github_context = jsonb(what, new.github_context)
    check_text(what, new.branch, new.commit_sha, new.base_sha, str(new.trigger), new.triggered_by)
    for constraint, ok in (  # checked before the unique key, in name order, as PostgreSQL does
        ("pipeline_runs_base_sha_format", new.base_sha is None or SHA.fullmatch(new.base_sha) is not None),
        ("pipeline_runs_commit_sha_format", SHA.fullmatch(new.commit_sha) is not None),
        ("pipeline_runs_trigger_value", str(new.trigger) in _TRIGGERS),
    ):
        if not ok:
            raise check_violation(what, "pipeline_runs", constraint)
    ref = new.ref()
    check_text(what, new.tag, ref, *new.release_projects)
    existing = tables.run_by_key.get((repo_id, new.commit_sha, ref))
    if existing is not None:
        return tables.runs[existing], False
    row = RunRow(
        id=uuid4(),
        repository_id=repo_id,
        branch=new.branch,
        tag=new.tag,
        release_projects=tuple(new.release_projects),
        ref=ref,
        commit_sha=new.commit_sha,
        base_sha=new.base_sha,
        trigger=str(new.trigger),
        triggered_by=new.triggered_by,
        github_context=github_context,
        created_at=now,
        updated_at=now,
    )
    tables.runs[row.id] = row
    tables.run_by_key[repo_id, row.commit_sha, ref] = row.id
    record_changes(tables, [run_change(run_entity(tables, row))], now)
    return row, True


def run_filter(flt: RunFilter) -> list[tuple[_Column, str]]:
    """(column, text) pairs a listed run must match; ``InvalidInputError`` for an unknown filter."""
    return [(_FILTERS[key], value) for key, value in flt.conditions().items()]


def filter_runs(tables: Tables, tests: list[tuple[_Column, str]], what: str) -> list[RunRow]:
    """The matching runs, newest first (then by id)."""
    check_text(what, *(value for _, value in tests))
    rows = [r for r in tables.runs.values() if all(column(tables, r) == value for column, value in tests)]
    rows.sort(key=lambda r: r.id)
    rows.sort(key=lambda r: r.created_at, reverse=True)  # stable: by id within one created_at
    return rows


def claim_discovery(tables: Tables, limit: int, now: datetime) -> list[RunRow]:
    ready = (r for r in tables.runs.values() if r.discovery_status == Status.PENDING and r.status in UNFINISHED)
    claimed = oldest_first(ready)[:limit]
    for row in claimed:
        row.discovery_status = row.status = Status.RUNNING
        row.started_at = row.started_at or now
        row.updated_at = now
    record_changes(tables, [run_change(run_entity(tables, r)) for r in claimed], now)
    return claimed


def record_discovery(
    tables: Tables, row: RunRow, discovery: DiscoveryResult, object_key: str, now: datetime, what: str
) -> None:
    if row.discovery_status == Status.SUCCESS:
        if row.discovery_key == object_key:
            return  # the same result delivered twice
        raise ConflictError(
            f"run {row.id}: discovery already recorded as {row.discovery_key!r}, not {object_key!r}",
            details={"run_id": str(row.id), "discovery_key": row.discovery_key},
        )
    ensure_transition(f"run {row.id} discovery", row.discovery_status, Status.SUCCESS)
    check_text(what, object_key)
    row.discovery = jsonb(what, discovery.model_dump(mode="json"))
    row.discovery_status, row.discovery_key, row.updated_at = Status.SUCCESS, object_key, now
    record_changes(tables, [run_change(run_entity(tables, row))], now)


def fail_discovery(tables: Tables, row: RunRow, error: str, code: str, now: datetime, what: str) -> None:
    if row.discovery_status == Status.FAILED and row.status == Status.FAILED:
        return  # repeat: the first error stays
    ensure_transition(f"run {row.id} discovery", row.discovery_status, Status.FAILED)
    ensure_transition(f"run {row.id}", row.status, Status.FAILED)
    check_text(what, error, code)
    row.discovery_status = row.status = Status.FAILED
    row.error, row.error_code = error, code
    row.completed_at = row.completed_at or now
    row.updated_at = now
    record_changes(tables, [run_change(run_entity(tables, row))], now)


def set_workflow(
    tables: Tables, row: RunRow, workflow_name: str, replaces: str | None, now: datetime, what: str
) -> None:
    if row.workflow_name == workflow_name:
        return
    if row.workflow_name is not None and row.workflow_name != replaces:
        raise ConflictError(
            f"run {row.id} already has workflow {row.workflow_name!r}, not {workflow_name!r}",
            details={"run_id": str(row.id), "workflow_name": row.workflow_name},
        )
    if row.status.is_final:
        raise ConflictError(f"run {row.id} is already {row.status}", details={"run_id": str(row.id)})
    check_text(what, workflow_name)
    row.workflow_name, row.updated_at = workflow_name, now
    record_changes(tables, [run_change(run_entity(tables, row))], now)


def claim_execution(
    tables: Tables, limit: int, claimer: str, lease: float, now: datetime, per_repository: int = 0
) -> list[RunRow]:
    stale = now - timedelta(seconds=lease)
    ready = (
        r
        for r in tables.runs.values()
        if r.status == Status.RUNNING
        and r.discovery_status == Status.SUCCESS
        and r.workflow_name is None
        and r.cancel_requested_at is None
        and (r.execution_claimed_at is None or r.execution_claimed_at < stale)
    )
    claimed = oldest_first(ready)
    if per_repository:  # a place per repository: executing (a workflow, or a fresh claim) or claimed now
        busy = Counter(
            r.repository_id
            for r in tables.runs.values()
            if r.status == Status.RUNNING
            and (
                r.workflow_name is not None or (r.execution_claimed_at is not None and r.execution_claimed_at >= stale)
            )
        )
        placed: list[RunRow] = []
        for row in claimed:
            if busy[row.repository_id] < per_repository:
                busy[row.repository_id] += 1
                placed.append(row)
        claimed = placed
    claimed = claimed[:limit]
    for row in claimed:
        row.execution_claimed_at = row.updated_at = now
        row.execution_claimed_by = claimer
    return claimed


def renew_execution_claims(tables: Tables, run_ids: Sequence[UUID], claimer: str, now: datetime) -> set[UUID]:
    held = {run_id for run_id in run_ids if (row := tables.runs.get(run_id)) and row.execution_claimed_by == claimer}
    for run_id in held:
        tables.runs[run_id].execution_claimed_at = tables.runs[run_id].updated_at = now
    return held


def release_execution_claims(tables: Tables, run_ids: Sequence[UUID], claimer: str, now: datetime) -> set[UUID]:
    held = {run_id for run_id in run_ids if (row := tables.runs.get(run_id)) and row.execution_claimed_by == claimer}
    for run_id in held:
        row = tables.runs[run_id]
        row.execution_claimed_at, row.execution_claimed_by, row.updated_at = None, None, now
    return held


def finish_run(
    tables: Tables, row: RunRow, status: Status, error: str | None, code: str | None, now: datetime, what: str
) -> PipelineRun:
    """Sweep the steps, settle the discovery, roll up; a repeat returns the run as it was before."""
    if row.status.is_final and row.status != status:
        raise ConflictError(
            f"run {row.id} is already {row.status}",
            details={"run_id": str(row.id), "from": str(row.status), "to": str(status)},
        )
    ensure_transition(f"run {row.id}", row.status, status)
    if row.status != status:
        check_text(what, error, code)
    before = run_entity(tables, row)
    changes = sweep_steps(tables, row.id, now)
    settled = row.discovery_status in UNFINISHED
    if settled:  # a run that ends before its discovery did
        row.discovery_status = Status.CANCELLED if row.discovery_status == Status.RUNNING else Status.SKIPPED
        row.updated_at = now
    changes += roll_up_run(tables, row.id, now)
    if before.status == status:
        if settled:
            changes.append(run_change(run_entity(tables, row)))
        record_changes(tables, changes, now)
        return before
    row.error = error if error is not None else row.error
    row.error_code = code if code is not None else row.error_code
    stamp(row, status, now)
    finished = run_entity(tables, row)
    record_changes(tables, [*changes, run_change(finished)], now)
    prune_changes(tables, now)
    return finished


def request_cancel(tables: Tables, row: RunRow, now: datetime) -> None:
    if row.status.is_final:
        raise ConflictError(
            f"run {row.id} is already {row.status}",
            details={"run_id": str(row.id), "run_status": str(row.status)},
        )
    if row.cancel_requested_at is None:
        row.cancel_requested_at = row.updated_at = now
        record_changes(tables, [run_change(run_entity(tables, row))], now)

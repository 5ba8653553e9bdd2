"""Step executions of ``PostgresStore``: planning them from a discovery, reading them, applying step
events and rolling statuses up. Locks are always taken run -> steps -> tasks -> phases, each set in
id order, so concurrent writers wait for each other instead of deadlocking."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from forge.adapters._postgres_rows import (
    detail_from_row,
    phase_from_row,
    step_from_row,
    task_from_row,
)
from forge.adapters._postgres_sql import (
    SQL_INSERT_CHANGES,
    SQL_LOCK_PHASES,
    SQL_LOCK_RUNS_OF_STEPS,
    SQL_LOCK_STEPS,
    SQL_LOCK_TASKS,
    SQL_LOCK_TASKS_OF_RUN,
    SQL_PHASE_CHILDREN,
    SQL_PHASE_CHILDREN_OF_RUN,
    SQL_PHASES_OF_RUN,
    SQL_SET_PHASE_STATUS,
    SQL_SET_TASK_STATUS_OF_RUN,
    SQL_STEPS_OF_RUN,
    SQL_TASK_CHILDREN,
    SQL_TASK_CHILDREN_OF_RUN,
    SQL_TASKS_OF_RUN,
    SQL_UPDATE_STEPS,
)
from forge.domain.events import StepEvent, StepState, advance
from forge.domain.plan import ExecutionPlan
from forge.domain.rollup import settle
from forge.domain.status import Status
from forge.ports.changes import STEP_FIELDS, NewChange, change_of, created
from forge.ports.store import RunExecutions

_log = logging.getLogger("forge.store.executions")


def plan_columns(plan: ExecutionPlan) -> tuple[list[Any], list[Any], list[Any]]:
    """Column arrays (for ``unnest``) of the planned phases, tasks and steps."""
    steps = [(s.phase, s.project, s.name, s.action, s.target, s.position) for s in plan.steps]
    return (
        [list(plan.phases), list(plan.phases.values())],
        [list(column) for column in zip(*plan.tasks, strict=True)] if plan.tasks else [[], [], []],
        [list(column) for column in zip(*steps, strict=True)] if steps else [[], [], [], [], [], []],
    )


async def read_executions(conn: PoolConnectionProxy[asyncpg.Record], run_id: UUID) -> RunExecutions:
    phase_rows = await conn.fetch(SQL_PHASES_OF_RUN, run_id)
    task_rows = await conn.fetch(SQL_TASKS_OF_RUN, run_id)
    step_rows = await conn.fetch(SQL_STEPS_OF_RUN, run_id)
    return RunExecutions(
        run_id=run_id,
        phases=[phase_from_row(r) for r in phase_rows],
        tasks=[task_from_row(r) for r in task_rows],
        steps=[step_from_row(r) for r in step_rows],
        details={r["id"]: detail_from_row(r) for r in (*phase_rows, *task_rows, *step_rows)},
    )


async def apply_events(conn: PoolConnectionProxy[asyncpg.Record], events: Sequence[StepEvent]) -> int:
    """Apply ``events`` in order to their (locked) steps, write the changed steps in one statement and
    roll their tasks and phases up; the number of steps that changed. Their runs are locked first
    (run -> steps -> tasks -> phases) and every change is recorded (``record_changes``)."""
    step_ids = sorted({e.step_id for e in events})
    run_of = {r["step_id"]: r["run_id"] for r in await conn.fetch(SQL_LOCK_RUNS_OF_STEPS, step_ids)}
    rows = await conn.fetch(SQL_LOCK_STEPS, step_ids)
    states = {r["id"]: _state(r) for r in rows}
    task_of = {r["id"]: r["task_id"] for r in rows}
    changed: dict[UUID, StepState] = {}
    for event in events:
        state = states.get(event.step_id)
        if state is None:
            _log.warning("event %s names no known step; dropped", event.key)
            continue
        new = advance(state, event)
        if new is not None:
            states[event.step_id] = changed[event.step_id] = new
    if not changed:
        return 0
    ids = list(changed)
    columns = [[getattr(changed[i], name) for i in ids] for name in _STATE_COLUMNS]
    await conn.execute(SQL_UPDATE_STEPS, ids, *columns)
    changes = [change_of(run_of[i], "step", i, _state_values(changed[i])) for i in ids]
    changes += await roll_up_tasks(conn, {task_of[i] for i in ids})
    await record_changes(conn, changes)
    return len(changed)


def _state_values(state: StepState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in STEP_FIELDS}


async def record_changes(conn: PoolConnectionProxy[asyncpg.Record], changes: Sequence[NewChange]) -> None:
    """Insert ``changes`` in order (one statement) and NOTIFY their runs; the caller's transaction has
    locked every run they are of (so a run's change ids commit in order)."""
    if not changes:
        return
    await conn.execute(
        SQL_INSERT_CHANGES,
        [c.run_id for c in changes],
        [c.kind for c in changes],
        [c.entity_id for c in changes],
        [c.status for c in changes],
        [json.dumps(c.body) for c in changes],
    )


async def created_changes(conn: PoolConnectionProxy[asyncpg.Record], run_id: UUID) -> list[NewChange]:
    """The first change of every phase, task and step of the run (just created, ``pending``)."""
    phase_rows = await conn.fetch(SQL_PHASES_OF_RUN, run_id)
    phases = [created(run_id, "phase", r["id"], {**dict(r), "group": r["group_number"]}) for r in phase_rows]
    tasks = [created(run_id, "task", r["id"], r) for r in await conn.fetch(SQL_TASKS_OF_RUN, run_id)]
    steps = [created(run_id, "step", r["id"], r) for r in await conn.fetch(SQL_STEPS_OF_RUN, run_id)]
    return phases + tasks + steps


_STATE_COLUMNS = ("status", "attempts", "exit_code", "logs_key", "message", "started_at", "completed_at")


def _state(row: asyncpg.Record) -> StepState:
    return StepState(Status(row["status"]), *(row[name] for name in _STATE_COLUMNS[1:]))


async def roll_up_tasks(conn: PoolConnectionProxy[asyncpg.Record], task_ids: Collection[UUID]) -> list[NewChange]:
    """Settle the tasks from their steps, then the phases of the tasks that changed; their changes."""
    await conn.fetch(SQL_LOCK_TASKS, sorted(task_ids))
    phases: set[UUID] = set()
    changes: list[NewChange] = []
    for row in await conn.fetch(SQL_TASK_CHILDREN, list(task_ids)):
        current = Status(row["status"])
        new = settle(current, (Status(c) for c in row["children"]))
        if new != current:
            changes.append(await _set_task(conn, row["id"], new))
            phases.add(row["phase_id"])
    if not phases:
        return changes
    await conn.fetch(SQL_LOCK_PHASES, sorted(phases))
    for row in await conn.fetch(SQL_PHASE_CHILDREN, list(phases)):
        current = Status(row["status"])
        new = settle(current, (Status(c) for c in row["children"]))
        if new != current:
            changes.append(await _set_phase(conn, row["id"], new))
    return changes


async def roll_up_run(conn: PoolConnectionProxy[asyncpg.Record], run_id: UUID) -> list[NewChange]:
    """Settle every task, then every phase, of the run (after its steps changed in bulk); their changes."""
    changes: list[NewChange] = []
    await conn.fetch(SQL_LOCK_TASKS_OF_RUN, run_id)
    for row in await conn.fetch(SQL_TASK_CHILDREN_OF_RUN, run_id):
        current = Status(row["status"])
        new = settle(current, (Status(s) for s in row["children"]))
        if new != current:
            changes.append(await _set_task(conn, row["id"], new))
    await conn.fetch("SELECT id FROM phase_executions WHERE run_id = $1 ORDER BY id FOR UPDATE", run_id)
    for row in await conn.fetch(SQL_PHASE_CHILDREN_OF_RUN, run_id):
        current = Status(row["status"])
        new = settle(current, (Status(s) for s in row["children"]))
        if new != current:
            changes.append(await _set_phase(conn, row["id"], new))
    return changes


async def _set_task(conn: PoolConnectionProxy[asyncpg.Record], task_id: UUID, status: Status) -> NewChange:
    row = await conn.fetchrow(SQL_SET_TASK_STATUS_OF_RUN, task_id, status)
    assert row is not None
    return change_of(row["run_id"], "task", task_id, row)


async def _set_phase(conn: PoolConnectionProxy[asyncpg.Record], phase_id: UUID, status: Status) -> NewChange:
    row = await conn.fetchrow(SQL_SET_PHASE_STATUS, phase_id, status)
    assert row is not None
    return change_of(row["run_id"], "phase", phase_id, row)

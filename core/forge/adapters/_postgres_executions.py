"""Step executions of ``PostgresStore``: planning them from a discovery, reading them, applying step
events and rolling statuses up. Locks are always taken run -> steps -> tasks -> phases, each set in
id order, so concurrent writers wait for each other instead of deadlocking."""

from __future__ import annotations

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
    SQL_LOCK_PHASES,
    SQL_LOCK_STEPS,
    SQL_LOCK_TASKS,
    SQL_LOCK_TASKS_OF_RUN,
    SQL_PHASE_CHILDREN,
    SQL_PHASE_CHILDREN_OF_RUN,
    SQL_PHASES_OF_RUN,
    SQL_SET_PHASE_STATUS,
    SQL_SET_TASK_STATUS,
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
    roll their tasks and phases up; the number of steps that changed."""
    rows = await conn.fetch(SQL_LOCK_STEPS, sorted({e.step_id for e in events}))
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
    await roll_up_tasks(conn, {task_of[i] for i in ids})
    return len(changed)


_STATE_COLUMNS = ("status", "attempts", "exit_code", "logs_key", "message", "started_at", "completed_at")


def _state(row: asyncpg.Record) -> StepState:
    return StepState(Status(row["status"]), *(row[name] for name in _STATE_COLUMNS[1:]))


async def roll_up_tasks(conn: PoolConnectionProxy[asyncpg.Record], task_ids: Collection[UUID]) -> None:
    """Settle the tasks from their steps, then the phases of the tasks that changed."""
    await conn.fetch(SQL_LOCK_TASKS, sorted(task_ids))
    phases: set[UUID] = set()
    for row in await conn.fetch(SQL_TASK_CHILDREN, list(task_ids)):
        current = Status(row["status"])
        new = settle(current, (Status(c) for c in row["children"]))
        if new != current:
            await conn.execute(SQL_SET_TASK_STATUS, row["id"], new)
            phases.add(row["phase_id"])
    if not phases:
        return
    await conn.fetch(SQL_LOCK_PHASES, sorted(phases))
    for row in await conn.fetch(SQL_PHASE_CHILDREN, list(phases)):
        current = Status(row["status"])
        new = settle(current, (Status(c) for c in row["children"]))
        if new != current:
            await conn.execute(SQL_SET_PHASE_STATUS, row["id"], new)


async def roll_up_run(conn: PoolConnectionProxy[asyncpg.Record], run_id: UUID) -> None:
    """Settle every task, then every phase, of the run (after its steps changed in bulk)."""
    await conn.fetch(SQL_LOCK_TASKS_OF_RUN, run_id)
    for row in await conn.fetch(SQL_TASK_CHILDREN_OF_RUN, run_id):
        current = Status(row["status"])
        new = settle(current, (Status(s) for s in row["children"]))
        if new != current:
            await conn.execute(SQL_SET_TASK_STATUS, row["id"], new)
    await conn.fetch("SELECT id FROM phase_executions WHERE run_id = $1 ORDER BY id FOR UPDATE", run_id)
    for row in await conn.fetch(SQL_PHASE_CHILDREN_OF_RUN, run_id):
        current = Status(row["status"])
        new = settle(current, (Status(s) for s in row["children"]))
        if new != current:
            await conn.execute(SQL_SET_PHASE_STATUS, row["id"], new)

"""Step executions of ``PostgresStore``: planning them from a discovery, reading them, rolling statuses up."""

from __future__ import annotations

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
    SQL_LOCK_TASKS_OF_RUN,
    SQL_PHASE_CHILDREN_OF_RUN,
    SQL_PHASES_OF_RUN,
    SQL_SET_PHASE_STATUS,
    SQL_SET_TASK_STATUS,
    SQL_STEPS_OF_RUN,
    SQL_TASK_CHILDREN_OF_RUN,
    SQL_TASKS_OF_RUN,
)
from forge.domain.discovery import DiscoveryResult
from forge.domain.rollup import settle
from forge.domain.status import Status
from forge.errors import InvalidInputError
from forge.ports.store import RunExecutions


def plan_executions(discovery: DiscoveryResult) -> tuple[list[Any], list[Any], list[Any]]:
    """Column arrays for the phases, tasks and steps of ``discovery``'s affected projects."""
    groups = {phase: group.group for group in discovery.phase_groups for phase in group.phases}
    projects = {project.name: project for project in discovery.projects}
    phases: dict[str, int] = {}
    tasks: list[tuple[str, str, str]] = []
    steps: list[tuple[str, str, str, str, str, int]] = []
    for name in discovery.affected_names():
        project = projects.get(name)
        if project is None:
            raise InvalidInputError(
                f"discovery: affected project {name!r} is not among the discovered projects",
                details={"project": name},
            )
        positions: dict[str, int] = {}
        for step in project.steps:
            if step.phase not in groups:
                raise InvalidInputError(
                    f"discovery: phase {step.phase!r} of project {name!r} is in no phase group",
                    details={"project": name, "phase": step.phase},
                )
            if step.phase not in positions:
                positions[step.phase] = 0
                phases[step.phase] = groups[step.phase]
                tasks.append((step.phase, name, project.path))
            steps.append((step.phase, name, step.name, step.action, step.target, positions[step.phase]))
            positions[step.phase] += 1
    return (
        [list(phases), list(phases.values())],
        [list(column) for column in zip(*tasks, strict=True)] if tasks else [[], [], []],
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


async def roll_up_task(conn: PoolConnectionProxy[asyncpg.Record], task_id: UUID) -> None:
    """Settle the (locked) task from its steps, and its phase when the task changed."""
    task = await conn.fetchrow("SELECT id, phase_id, status FROM task_executions WHERE id = $1 FOR UPDATE", task_id)
    assert task is not None  # a step's foreign key
    children = await conn.fetch("SELECT status FROM step_executions WHERE task_id = $1", task_id)
    current = Status(task["status"])
    new = settle(current, (Status(r["status"]) for r in children))
    if new != current:
        await conn.execute(SQL_SET_TASK_STATUS, task_id, new)
        await roll_up_phase(conn, task["phase_id"])


async def roll_up_phase(conn: PoolConnectionProxy[asyncpg.Record], phase_id: UUID) -> None:
    phase = await conn.fetchrow("SELECT status FROM phase_executions WHERE id = $1 FOR UPDATE", phase_id)
    assert phase is not None  # a task's foreign key
    children = await conn.fetch("SELECT status FROM task_executions WHERE phase_id = $1", phase_id)
    current = Status(phase["status"])
    new = settle(current, (Status(r["status"]) for r in children))
    if new != current:
        await conn.execute(SQL_SET_PHASE_STATUS, phase_id, new)


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

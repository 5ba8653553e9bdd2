"""Phases, tasks and steps of the in-memory store: planned from a discovery, read in ``PostgresStore``'s
order, changed by step events and rolled up exactly as ``forge.adapters._postgres_executions`` does.

Every function here runs without awaiting, so each call of the store is one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from forge.domain.events import StepEvent, StepState, advance
from forge.domain.plan import ExecutionPlan
from forge.domain.rollup import settle
from forge.domain.status import Status
from forge.ports.changes import NewChange, change_of, created
from forge.ports.fakes._memory_changes import record_changes, values_of
from forge.ports.fakes._memory_rows import (
    PhaseRow,
    RunRow,
    StepRow,
    Tables,
    TaskRow,
    check_int32,
    check_text,
    check_violation,
    detail_of,
    phase_entity,
    step_entity,
    task_entity,
    utc,
)
from forge.ports.store import RunExecutions

__all__ = [
    "apply_events",
    "create_executions",
    "read_executions",
    "roll_up_run",
    "roll_up_tasks",
    "run_of_step",
    "stamp",
    "step_change",
    "sweep_steps",
]

_log = logging.getLogger("forge.store.executions")
#: started_at is stamped when work begins (or ends having run); ``STAMPS`` of ``_postgres_sql``.
_STARTS = frozenset({Status.RUNNING, Status.SUCCESS, Status.FAILED})
_UNFINISHED = frozenset({Status.PENDING, Status.RUNNING})


def create_executions(tables: Tables, run: RunRow, plan: ExecutionPlan, now: datetime, what: str) -> None:
    """Insert the planned rows; a repeated (phase, project) or (task, step name) is dropped (ON CONFLICT DO NOTHING)."""
    phases, tasks = plan.phases, plan.tasks
    steps = [(s.phase, s.project, s.name, s.action, s.target, s.position) for s in plan.steps]
    if any(group < 0 for group in phases.values()):
        raise check_violation(what, "phase_executions", "phase_executions_group_number_range")
    check_text(what, *phases, *(v for task in tasks for v in task), *(v for s in steps for v in s[:5]))
    check_int32(what, phases.values())
    phase_ids: dict[str, UUID] = {}
    for name, group in phases.items():
        phase = PhaseRow(uuid4(), run.id, name, group, now, now)
        tables.phases[phase.id] = phase
        tables.phases_of.setdefault(run.id, []).append(phase.id)
        tables.tasks_of[phase.id] = []
        phase_ids[name] = phase.id
    task_ids: dict[tuple[str, str], UUID] = {}
    for phase_name, project, path in tasks:
        if (phase_name, project) in task_ids:
            continue
        task = TaskRow(uuid4(), phase_ids[phase_name], project, path, now, now)
        tables.tasks[task.id] = task
        tables.tasks_of[task.phase_id].append(task.id)
        tables.steps_of[task.id] = []
        task_ids[phase_name, project] = task.id
    for phase_name, project, name, action, target, position in steps:
        task_id = task_ids[phase_name, project]
        if any(tables.steps[s].name == name for s in tables.steps_of[task_id]):
            continue
        step = StepRow(uuid4(), task_id, name, action, target, position, now, now)
        tables.steps[step.id] = step
        tables.steps_of[task_id].append(step.id)
    record_changes(tables, _created(tables, run.id), now)


def _created(tables: Tables, run_id: UUID) -> list[NewChange]:
    """The first change of every phase, task and step of the run, in ``read_executions``' order."""
    phases = sorted((tables.phases[p] for p in tables.phases_of.get(run_id, ())), key=lambda p: (p.group, p.name))
    tasks = [t for p in phases for t in sorted((tables.tasks[i] for i in tables.tasks_of[p.id]), key=_project)]
    steps = [s for t in tasks for s in sorted((tables.steps[i] for i in tables.steps_of[t.id]), key=_position_and_name)]
    return [
        *(created(run_id, "phase", p.id, values_of(p)) for p in phases),
        *(created(run_id, "task", t.id, values_of(t)) for t in tasks),
        *(created(run_id, "step", s.id, values_of(s)) for s in steps),
    ]


def read_executions(tables: Tables, run_id: UUID) -> RunExecutions:
    """Phases by group then name, tasks by phase then project, steps by task then position and name."""
    phases = sorted((tables.phases[p] for p in tables.phases_of.get(run_id, ())), key=lambda p: (p.group, p.name))
    tasks = [t for p in phases for t in sorted((tables.tasks[i] for i in tables.tasks_of[p.id]), key=_project)]
    steps = [s for t in tasks for s in sorted((tables.steps[i] for i in tables.steps_of[t.id]), key=_position_and_name)]
    return RunExecutions(
        run_id=run_id,
        phases=[phase_entity(p) for p in phases],
        tasks=[task_entity(t) for t in tasks],
        steps=[step_entity(s) for s in steps],
        details={row.id: detail_of(row) for rows in (phases, tasks, steps) for row in rows},
    )


def apply_events(tables: Tables, events: Sequence[StepEvent], now: datetime, what: str) -> int:
    """Apply ``events`` in order, write the changed steps and roll their tasks and phases up; steps changed."""
    states: dict[UUID, StepState] = {}
    changed: dict[UUID, StepState] = {}
    for event in events:
        row = tables.steps.get(event.step_id)
        if row is None:
            _log.warning("event %s names no known step; dropped", event.key)
            continue
        new = advance(states.get(row.id) or _state(row), event)
        if new is not None:
            states[row.id] = changed[row.id] = new
    if not changed:
        return 0
    check_int32(what, (v for s in changed.values() for v in (s.attempts, s.exit_code)))
    check_text(what, *(v for s in changed.values() for v in (s.logs_key, s.message)))
    for step_id, state in changed.items():
        row = tables.steps[step_id]
        row.status, row.attempts, row.exit_code = state.status, state.attempts, state.exit_code
        row.logs_key, row.message = state.logs_key, state.message
        row.started_at = None if state.started_at is None else utc(state.started_at)
        row.completed_at = None if state.completed_at is None else utc(state.completed_at)
        row.updated_at = now
    changes = [change_of(run_of_step(tables, i), "step", i, values_of(tables.steps[i])) for i in changed]
    changes += roll_up_tasks(tables, {tables.steps[i].task_id for i in changed}, now)
    record_changes(tables, changes, now)
    return len(changed)


def run_of_step(tables: Tables, step_id: UUID) -> UUID:
    return tables.phases[tables.tasks[tables.steps[step_id].task_id].phase_id].run_id


def step_change(tables: Tables, step: StepRow) -> NewChange:
    return change_of(run_of_step(tables, step.id), "step", step.id, values_of(step))


def roll_up_tasks(tables: Tables, task_ids: Collection[UUID], now: datetime) -> list[NewChange]:
    """Settle the tasks from their steps, then the phases of the tasks that changed; their changes."""
    phases: set[UUID] = set()
    changes: list[NewChange] = []
    for task_id in task_ids:
        task = tables.tasks[task_id]
        children = [tables.steps[s].status for s in tables.steps_of[task_id]]
        if children and _settle(task, children, now):
            phases.add(task.phase_id)
            changes.append(_task_change(tables, task))
    for phase_id in phases:
        phase = tables.phases[phase_id]
        if _settle(phase, [tables.tasks[t].status for t in tables.tasks_of[phase_id]], now):
            changes.append(change_of(phase.run_id, "phase", phase.id, values_of(phase)))
    return changes


def roll_up_run(tables: Tables, run_id: UUID, now: datetime) -> list[NewChange]:
    """Settle every task, then every phase, of the run (a task or phase without children too); their changes."""
    changes = [
        _task_change(tables, task)
        for task in tables.run_tasks(run_id)
        if _settle(task, [tables.steps[s].status for s in tables.steps_of[task.id]], now)
    ]
    for phase_id in tables.phases_of.get(run_id, ()):
        phase = tables.phases[phase_id]
        if _settle(phase, [tables.tasks[t].status for t in tables.tasks_of[phase_id]], now):
            changes.append(change_of(run_id, "phase", phase_id, values_of(phase)))
    return changes


def _task_change(tables: Tables, task: TaskRow) -> NewChange:
    return change_of(tables.phases[task.phase_id].run_id, "task", task.id, values_of(task))


def sweep_steps(tables: Tables, run_id: UUID, now: datetime) -> list[NewChange]:
    """A finished run leaves nothing pending (now skipped) or running (now cancelled); the swept steps' changes."""
    changes: list[NewChange] = []
    for step in tables.run_steps(run_id):
        if step.status in _UNFINISHED:
            step.status = Status.SKIPPED if step.status is Status.PENDING else Status.CANCELLED
            step.completed_at = step.completed_at or now
            step.updated_at = now
            changes.append(change_of(run_id, "step", step.id, values_of(step)))
    return changes


def stamp(row: RunRow | PhaseRow | TaskRow, status: Status, now: datetime) -> None:
    """Set ``status`` with the timestamps it implies (``STAMPS`` of ``_postgres_sql``)."""
    row.status = status
    if status in _STARTS and row.started_at is None:
        row.started_at = now
    if status.is_final and row.completed_at is None:
        row.completed_at = now
    row.updated_at = now


def _settle(row: PhaseRow | TaskRow, children: list[Status], now: datetime) -> bool:
    new = settle(row.status, children)
    if new == row.status:
        return False
    stamp(row, new, now)
    return True


def _state(row: StepRow) -> StepState:
    return StepState(
        row.status, row.attempts, row.exit_code, row.logs_key, row.message, row.started_at, row.completed_at
    )


def _project(task: TaskRow) -> str:
    return task.project


def _position_and_name(step: StepRow) -> tuple[int, str]:
    return step.position, step.name

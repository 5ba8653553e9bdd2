"""The ``*_json`` reads of the in-memory store: the same bytes ``PostgresStore`` has PostgreSQL write.

Values are encoded one by one with ``pydantic_core.to_json`` (which escapes strings exactly as
PostgreSQL's ``to_json`` and msgspec do, and writes aware UTC datetimes as pydantic does) and joined
without spaces. A stored discovery is printed as jsonb prints it (:func:`jsonb_text`). A version is
built from the rows' ``updated_at``: every write stamps it from a strictly increasing clock, as
every UPDATE gives a PostgreSQL row a new ``xmin``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from pydantic_core import to_json

from forge.ports.fakes._memory_rows import PhaseRow, RunRow, StepRow, Tables, TaskRow
from forge.ports.store import JsonDocument

__all__ = ["executions_json", "jsonb_text", "run_json", "runs_json"]

_RUN_FIELDS = (
    "id",
    "repository",
    "branch",
    "tag",
    "release_projects",
    "commit_sha",
    "base_sha",
    "trigger",
    "triggered_by",
    "status",
    "discovery_status",
    "discovery",
    "discovery_key",
    "error",
    "error_code",
    "workflow_name",
    "cancel_requested_at",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
)
_PHASE_FIELDS = ("id", "run_id", "name", "group", "status", "created_at", "updated_at", "started_at", "completed_at")
_TASK_FIELDS = (
    "id",
    "phase_id",
    "project",
    "project_path",
    "status",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
)
_STEP_FIELDS = (
    "id",
    "task_id",
    "name",
    "action",
    "target",
    "status",
    "exit_code",
    "attempts",
    "logs_key",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "message",
)


def run_json(tables: Tables, row: RunRow) -> JsonDocument:
    return JsonDocument(_run(tables, row).encode(), _version([row]))


def runs_json(tables: Tables, rows: list[RunRow], total: int, limit: int, offset: int) -> JsonDocument:
    """One page (``rows``) of ``total`` runs."""
    items = ",".join(_run(tables, row) for row in rows)
    body = f'{{"items":[{items}],"total":{total},"limit":{limit},"offset":{offset}}}'
    return JsonDocument(body.encode(), _version(rows, total), total)


def executions_json(tables: Tables, run_id: UUID, limit: int, offset: int) -> JsonDocument:
    """The page of steps ``offset`` to ``offset + limit`` in tree order under their tasks and phases;
    tasks and phases without steps on the page at offset 0 only."""
    phases = sorted((tables.phases[p] for p in tables.phases_of.get(run_id, ())), key=lambda p: (p.group, p.name))
    tree: list[tuple[PhaseRow, list[tuple[TaskRow, list[StepRow]]]]] = []
    number = 0
    for phase in phases:
        tasks = sorted((tables.tasks[t] for t in tables.tasks_of[phase.id]), key=lambda t: t.project)
        kept: list[tuple[TaskRow, list[StepRow]]] = []
        for task in tasks:
            steps = sorted((tables.steps[s] for s in tables.steps_of[task.id]), key=lambda s: (s.position, s.name))
            page = [s for i, s in enumerate(steps, start=number) if offset <= i < offset + limit]
            number += len(steps)
            if page or (not steps and offset == 0):
                kept.append((task, page))
        if kept or (not tasks and offset == 0):
            tree.append((phase, kept))
    docs = ",".join(
        _object(
            phase,
            _PHASE_FIELDS,
            tasks="[" + ",".join(_object(task, _TASK_FIELDS, steps=_steps(steps)) for task, steps in kept) + "]",
        )
        for phase, kept in tree
    )
    body = f'{{"run_id":"{run_id}","phases":[{docs}]}}'
    rows: list[PhaseRow | TaskRow | StepRow] = []
    for phase, kept in tree:
        rows.append(phase)
        for task, steps in kept:
            rows.append(task)
            rows.extend(steps)
    return JsonDocument(body.encode(), _version(rows, number), number)


def jsonb_text(text: str) -> str:
    """The text PostgreSQL prints for ``text`` stored as jsonb: object keys by length, then bytes (the
    last of duplicates wins), ``", "`` between items and ``": "`` after keys."""
    return _jsonb(json.loads(text))


def _jsonb(value: Any) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{_encode(k)}: {_jsonb(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb(v) for v in value) + "]"
    return _encode(value)


def _run(tables: Tables, row: RunRow) -> str:
    values = {
        "repository": _encode(tables.repositories[row.repository_id].name),
        "discovery": "null" if row.discovery is None else jsonb_text(row.discovery),
    }
    return "{" + ",".join(f'"{name}":{values.get(name) or _encode(getattr(row, name))}' for name in _RUN_FIELDS) + "}"


def _steps(steps: list[StepRow]) -> str:
    return "[" + ",".join(_object(step, _STEP_FIELDS) for step in steps) + "]"


def _object(row: PhaseRow | TaskRow | StepRow, fields: tuple[str, ...], **nested: str) -> str:
    encoded = [f'"{name}":{_encode(getattr(row, name))}' for name in fields]
    encoded += [f'"{name}":{text}' for name, text in nested.items()]
    return "{" + ",".join(encoded) + "}"


def _encode(value: Any) -> str:
    return to_json(value).decode()


def _version(rows: Iterable[RunRow | PhaseRow | TaskRow | StepRow], *extra: object) -> str:
    parts = [*(str(e) for e in extra), *(f"{row.id}@{row.updated_at.isoformat()}" for row in rows)]
    return hashlib.md5(",".join(parts).encode(), usedforsecurity=False).hexdigest()

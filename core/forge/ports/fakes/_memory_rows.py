"""Tables of the in-memory store: one mutable row per PostgreSQL row, the checks the schema makes, and
the domain entities built from rows the way ``forge.adapters._postgres_rows`` builds them.

JSON columns keep the encoded text and decode it on every read, as jsonb does, so a caller never
shares a dict with the store; timestamps are UTC, as asyncpg returns timestamptz.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from forge.domain.entities import PhaseExecution, PipelineRun, Repository, StepExecution, TaskExecution
from forge.domain.status import Status
from forge.errors import ForgeError, InvalidInputError
from forge.ports.store import ExecutionDetail

__all__ = [
    "REPO_NAME",
    "SHA",
    "ChangeRow",
    "Clock",
    "PhaseRow",
    "RepositoryRow",
    "RunRow",
    "StepRow",
    "Tables",
    "TaskRow",
    "check_int32",
    "check_text",
    "check_violation",
    "detail_of",
    "jsonb",
    "phase_entity",
    "repository_entity",
    "run_entity",
    "step_entity",
    "task_entity",
    "utc",
]

_M = TypeVar("_M", bound=BaseModel)
_INT32 = (-(2**31), 2**31 - 1)
#: ``\u0000`` in JSON text (not an escaped backslash before ``u0000``): jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: The CHECK patterns of the schema (PostgreSQL's ``~ '^...$'`` is a full match).
SHA = re.compile(r"[0-9a-f]{40}")
REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class Clock:
    """``now()`` of the store: UTC, strictly increasing (two writes never share a ``created_at``)."""

    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = utc(self._source())
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


@dataclass(slots=True)
class RepositoryRow:
    id: UUID
    name: str
    clone_url: str
    default_branch: str
    webhook_secret_ref: str | None
    created_at: datetime
    updated_at: datetime
    enabled: bool = True
    secrets: tuple[str, ...] = ()
    pool: str = "default"


@dataclass(slots=True)
class RunRow:
    id: UUID
    repository_id: UUID
    branch: str | None
    tag: str | None
    release_projects: tuple[str, ...]
    ref: str
    commit_sha: str
    base_sha: str | None
    trigger: str
    triggered_by: str
    github_context: str | None  # jsonb text
    created_at: datetime
    updated_at: datetime
    status: Status = Status.PENDING
    discovery_status: Status = Status.PENDING
    discovery: str | None = None  # jsonb text
    discovery_key: str | None = None
    error: str | None = None
    error_code: str | None = None
    workflow_name: str | None = None
    execution_claimed_at: datetime | None = None
    execution_claimed_by: str | None = None
    cancel_requested_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class PhaseRow:
    id: UUID
    run_id: UUID
    name: str
    group: int
    created_at: datetime
    updated_at: datetime
    status: Status = Status.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class TaskRow:
    id: UUID
    phase_id: UUID
    project: str
    project_path: str
    created_at: datetime
    updated_at: datetime
    status: Status = Status.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class StepRow:
    id: UUID
    task_id: UUID
    name: str
    action: str
    target: str
    position: int
    created_at: datetime
    updated_at: datetime
    status: Status = Status.PENDING
    exit_code: int | None = None
    attempts: int = 0
    logs_key: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class ChangeRow:
    id: int
    run_id: UUID
    kind: str
    entity_id: UUID
    status: str
    body: str  # jsonb text
    at: datetime


class Tables:
    """Every row, by id, with the unique keys and child lists the store looks rows up by."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.repositories: dict[UUID, RepositoryRow] = {}
        self.repository_by_name: dict[str, UUID] = {}
        self.runs: dict[UUID, RunRow] = {}
        self.run_by_key: dict[tuple[UUID, str, str], UUID] = {}  # (repository, commit, ref)
        self.phases: dict[UUID, PhaseRow] = {}
        self.tasks: dict[UUID, TaskRow] = {}
        self.steps: dict[UUID, StepRow] = {}
        self.phases_of: dict[UUID, list[UUID]] = {}  # run -> phases
        self.tasks_of: dict[UUID, list[UUID]] = {}  # phase -> tasks
        self.steps_of: dict[UUID, list[UUID]] = {}  # task -> steps
        self.changes_of: dict[UUID, list[ChangeRow]] = {}  # run -> run_changes, by id
        self.last_change_id = 0  # the bigserial of run_changes
        self.change_listeners: list[Callable[[UUID], None]] = []  # NOTIFY run_changes

    def run_tasks(self, run_id: UUID) -> list[TaskRow]:
        return [self.tasks[t] for p in self.phases_of.get(run_id, ()) for t in self.tasks_of[p]]

    def run_steps(self, run_id: UUID) -> list[StepRow]:
        return [self.steps[s] for task in self.run_tasks(run_id) for s in self.steps_of[task.id]]


def utc(moment: datetime) -> datetime:
    """The instant as asyncpg returns a timestamptz (a naive datetime is local time, as asyncpg reads it)."""
    return moment.astimezone(UTC)


def check_violation(what: str, table: str, constraint: str) -> InvalidInputError:
    """What ``translate_errors`` makes of PostgreSQL's CheckViolationError."""
    return InvalidInputError(
        f"{what}: the value violates {constraint} of {table}",
        details={"constraint": constraint, "table": table, "column": None},
    )


def check_text(what: str, *values: str | None) -> None:
    """PostgreSQL text holds no NUL character (asyncpg's CharacterNotInRepertoireError, a DataError)."""
    if any(v is not None and "\x00" in v for v in values):
        raise InvalidInputError(f'{what}: invalid byte sequence for encoding "UTF8": 0x00')


def check_int32(what: str, values: Iterable[int | None]) -> None:
    """An integer column takes int32 (asyncpg refuses a larger parameter with a DataError)."""
    for value in values:
        if value is not None and not _INT32[0] <= value <= _INT32[1]:
            raise InvalidInputError(f"{what}: invalid input for query argument: {value} (value out of int32 range)")


def jsonb(what: str, value: Any) -> str | None:
    """The jsonb text of ``value``: what asyncpg's json codec sends and PostgreSQL accepts."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: invalid input for query argument: {value!r} ({exc})") from exc
    if _JSON_NUL.search(text):
        raise InvalidInputError(f"{what}: unsupported Unicode escape sequence (\\u0000 cannot be converted to text)")
    return text


def repository_entity(row: RepositoryRow) -> Repository:
    return _build(Repository, row.id, {name: getattr(row, name) for name in Repository.model_fields})


def run_entity(tables: Tables, row: RunRow) -> PipelineRun:
    values = {name: getattr(row, name) for name in PipelineRun.model_fields if name != "repository"}
    values["repository"] = tables.repositories[row.repository_id].name
    values["discovery"] = None if row.discovery is None else json.loads(row.discovery)
    values["github_context"] = None if row.github_context is None else json.loads(row.github_context)
    return _build(PipelineRun, row.id, values)


def phase_entity(row: PhaseRow) -> PhaseExecution:
    return _build(PhaseExecution, row.id, {name: getattr(row, name) for name in PhaseExecution.model_fields})


def task_entity(row: TaskRow) -> TaskExecution:
    return _build(TaskExecution, row.id, {name: getattr(row, name) for name in TaskExecution.model_fields})


def step_entity(row: StepRow) -> StepExecution:
    return _build(StepExecution, row.id, {name: getattr(row, name) for name in StepExecution.model_fields})


def detail_of(row: PhaseRow | TaskRow | StepRow) -> ExecutionDetail:
    return ExecutionDetail(row.started_at, row.completed_at, row.message if isinstance(row, StepRow) else None)


def _build(model: type[_M], row_id: UUID, values: dict[str, Any]) -> _M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:  # a row the checks allowed but the domain rejects: a bug, say which
        raise ForgeError(f"{model.__name__} row {row_id} is invalid: {exc}") from exc

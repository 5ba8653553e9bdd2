"""Watching runs without polling: the changes every store adapter records, and the feed that wakes watchers.

Every write of the store that changes a status of a run, phase, task or step records one
``RunChange`` per changed entity in the same transaction (``forge.ports.store``); the adapters build
those rows with the functions here, so PostgreSQL and memory store the same bodies. A watcher reads
the changes of its run after the last id it saw (``RunStore.changes_since``) at its own pace; a
``ChangeFeed`` only tells it *when* to read again (a run id per committed write), never what changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol
from uuid import UUID

from forge.domain.entities import PipelineRun
from forge.ports.store import ChangeKind

__all__ = [
    "CHANGES_KEPT",
    "NODE_FIELDS",
    "PHASE_IDENTITY",
    "RUN_FIELDS",
    "STEP_FIELDS",
    "STEP_IDENTITY",
    "TASK_IDENTITY",
    "ChangeFeed",
    "Columns",
    "Fanout",
    "NewChange",
    "Wakeups",
    "change_of",
    "created",
    "json_value",
    "run_change",
]

#: Changes of a run are kept this long after it finished (``finish_run`` deletes older ones).
CHANGES_KEPT = timedelta(hours=24)
#: What a change of each kind carries: the fields a view of the entity shows that can change.
RUN_FIELDS = (
    "status",
    "discovery_status",
    "error",
    "error_code",
    "workflow_name",
    "cancel_requested_at",
    "started_at",
    "completed_at",
)
NODE_FIELDS = ("status", "started_at", "completed_at")
STEP_FIELDS = ("status", "exit_code", "attempts", "logs_key", "message", "started_at", "completed_at")
#: The first change of a phase, task or step (its creation, ``pending``) also names it and its parent.
PHASE_IDENTITY = ("name", "group")
TASK_IDENTITY = ("phase_id", "project", "project_path")
STEP_IDENTITY = ("task_id", "name", "action", "target", "position")
_FIELDS: dict[str, tuple[str, ...]] = {
    "run": RUN_FIELDS,
    "phase": NODE_FIELDS,
    "task": NODE_FIELDS,
    "step": STEP_FIELDS,
}
_IDENTITY: dict[str, tuple[str, ...]] = {"phase": PHASE_IDENTITY, "task": TASK_IDENTITY, "step": STEP_IDENTITY}


@dataclass(frozen=True, slots=True)
class NewChange:
    """A change to record (the store assigns ``id`` and ``at``)."""

    run_id: UUID
    kind: ChangeKind
    entity_id: UUID
    status: str
    body: dict[str, Any]


def json_value(value: Any) -> Any:
    """``value`` as JSON has it: timestamps in UTC as the API writes them (ISO 8601, ``Z``), ids and
    statuses as strings."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    return value


class Columns(Protocol):
    """A row's values by column name (a dict, an asyncpg ``Record``)."""

    def __getitem__(self, name: str, /) -> Any: ...


def change_of(run_id: UUID, kind: ChangeKind, entity_id: UUID, values: Columns) -> NewChange:
    """The change of an entity whose fields (a row, by name) now are ``values``."""
    body = {name: json_value(values[name]) for name in _FIELDS[kind]}
    return NewChange(run_id, kind, entity_id, str(body["status"]), body)


def created(run_id: UUID, kind: ChangeKind, entity_id: UUID, values: Columns) -> NewChange:
    """The first change of a phase, task or step: its fields, its names and its parent."""
    change = change_of(run_id, kind, entity_id, values)
    change.body.update({name: json_value(values[name]) for name in _IDENTITY[kind]})
    return change


def run_change(run: PipelineRun) -> NewChange:
    return change_of(run.id, "run", run.id, run.model_dump(include=set(RUN_FIELDS)))


class Wakeups(Protocol):
    """Run ids, one each time a write of a listened run committed (repeats coalesce while unread)."""

    def __aiter__(self) -> Wakeups: ...

    async def __anext__(self) -> UUID: ...


class ChangeFeed(Protocol):
    def listen(self, *run_ids: UUID) -> AbstractAsyncContextManager[Wakeups]:
        """Wake-ups for writes of ``run_ids`` committed after entering. Enter before reading the
        changes, so nothing committed in between goes unnoticed. A feed that lost its source (a
        dropped connection) wakes every listener once it is back: changes may have been missed."""


class _Waiter:
    def __init__(self, run_ids: frozenset[UUID]) -> None:
        self.run_ids = run_ids
        self._pending: set[UUID] = set()
        self._event = asyncio.Event()

    def wake(self, run_id: UUID) -> None:
        self._pending.add(run_id)
        self._event.set()

    def __aiter__(self) -> _Waiter:
        return self

    async def __anext__(self) -> UUID:
        while not self._pending:
            self._event.clear()
            await self._event.wait()
        return self._pending.pop()


class Fanout:
    """In-process fan-out of run ids to listeners: what a ``ChangeFeed`` adapter does with each notice.

    A listener holds at most one pending wake-up per run it listens to (bounded memory); a slow
    listener never holds up ``notify``.
    """

    def __init__(self) -> None:
        self._by_run: dict[UUID, set[_Waiter]] = {}

    @property
    def listeners(self) -> int:
        return len({w for waiters in self._by_run.values() for w in waiters})

    @asynccontextmanager
    async def listen(self, *run_ids: UUID) -> AsyncIterator[Wakeups]:
        if not run_ids:
            raise ValueError("listen to at least one run")
        waiter = _Waiter(frozenset(run_ids))
        for run_id in waiter.run_ids:
            self._by_run.setdefault(run_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            for run_id in waiter.run_ids:
                waiters = self._by_run.get(run_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._by_run[run_id]

    def notify(self, run_id: UUID) -> None:
        for waiter in self._by_run.get(run_id, ()):
            waiter.wake(run_id)

    def wake_all(self) -> None:
        """Wake every listener for every run it listens to (after notices may have been lost)."""
        for run_id, waiters in self._by_run.items():
            for waiter in waiters:
                waiter.wake(run_id)

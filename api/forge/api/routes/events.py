"""``GET /v1/runs/{id}/events``: watch a run as Server-Sent Events instead of polling it.

Without ``Last-Event-ID``: one ``snapshot`` event (``{"run": <GET /v1/runs/{id}>, "executions":
<GET /v1/runs/{id}/executions>}``, read in one snapshot of the database together with the id of the
newest change it includes, which is the event's ``id``), then one ``change`` event per status change
of the run, its phases, tasks and steps, in commit order, ``id`` = the change's id. With
``Last-Event-ID: N`` (the header, or ``?last_event_id=N``): no snapshot, every change after N, then
live. Once the run is final and every change is sent: an ``end`` event, and the stream closes. A
comment line every 15 s keeps idle connections open.

Each watcher reads the ``run_changes`` table at its own pace (a page at a time, so its memory is
bounded and a slow client holds up nobody); the process's ``ChangeFeed`` (one LISTEN connection)
only wakes it when its run changed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from litestar import get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from forge.api.schemas import ExecutionsOut, RunOut
from forge.api.services import Services
from forge.domain.status import Status
from forge.ports.changes import ChangeFeed, Wakeups, json_value
from forge.ports.store import RunChange, RunSnapshot, RunStore

__all__ = ["KEEPALIVE", "run_events"]

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0
#: Changes read (and sent) per round trip: what one watcher holds at most.
PAGE = 500
#: Without a change feed (a test's services): how often a watcher reads the table anyway.
_POLL = 1.0


@get(
    "/v1/runs/{run_id:uuid}/events",
    summary="Watch a run (Server-Sent Events)",
    description="`text/event-stream`. Without `Last-Event-ID`: a `snapshot` event (`{run, executions}`: the "
    "bodies of `GET /v1/runs/{id}` and `GET /v1/runs/{id}/executions`; its `id` is the newest change it "
    "includes), then a `change` event per status change of the run, a phase, task or step, in order "
    "(`id`: the change id; `data`: `{id, run_id, kind, entity_id, status, at, body}`, `kind` one of run, "
    "phase, task, step; `body` the entity's changed fields, and for a phase, task or step just planned "
    "also its name and parent). With `Last-Event-ID` (header or `last_event_id`): every change after "
    "that id, then live. `end` (`{run_id, status}`) once the run is final and every change was sent; "
    "`: keep-alive` comments every 15 s. Changes are kept until 24 h after the run finished.",
    tags=["runs"],
    media_type="text/event-stream",
    responses={200: ResponseSpec(str, description="An event stream", media_type="text/event-stream")},
)
async def run_events(
    run_id: FromPath[UUID],
    services: Services,
    last_event_id_header: Annotated[
        int | None, HeaderParameter(name="Last-Event-ID", ge=0, description="Resume after this event id")
    ] = None,
    last_event_id: Annotated[
        int | None, QueryParameter(ge=0, description="Resume after this event id (for clients that cannot set it)")
    ] = None,
) -> Stream:
    after = last_event_id_header if last_event_id_header is not None else last_event_id
    first = b""
    if after is None:
        snapshot = await services.runs.run_snapshot(run_id)  # 404 before the stream starts
        first = _snapshot_event(snapshot)
        after, status = snapshot.last_change, snapshot.run.status
    else:
        status = (await services.runs.get_run(run_id)).status
    return Stream(
        _watch(services.runs, services.feed, run_id, after, status, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _watch(
    store: RunStore, feed: ChangeFeed | None, run_id: UUID, after: int, status: Status, first: bytes
) -> AsyncIterator[bytes]:
    if first:
        yield first
    last_sent = time.monotonic()
    async with feed.listen(run_id) if feed is not None else _ticking(run_id) as wakeups:
        # Listening before the first read: whatever commits from here on is either read or heard of.
        while True:
            changes = await store.changes_since(run_id, after, limit=PAGE)
            if changes:
                after = changes[-1].id
                status = next((c.status for c in reversed(changes) if c.kind == "run"), status)
                yield b"".join(_change_event(c) for c in changes)
                last_sent = time.monotonic()
                if len(changes) == PAGE:
                    continue
            if status.is_final:
                yield _event("end", after, {"run_id": str(run_id), "status": str(status)})
                return
            try:
                async with asyncio.timeout(KEEPALIVE):
                    await anext(wakeups)
            except TimeoutError:
                pass  # read anyway: a lost notice costs at most this long
            if time.monotonic() - last_sent >= KEEPALIVE:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()


class _Ticker:
    def __init__(self, run_id: UUID) -> None:
        self._run_id = run_id

    def __aiter__(self) -> _Ticker:
        return self

    async def __anext__(self) -> UUID:
        await asyncio.sleep(_POLL)
        return self._run_id


class _ticking:  # noqa: N801 - used as a context manager like ``feed.listen``
    def __init__(self, run_id: UUID) -> None:
        self._ticker = _Ticker(run_id)

    async def __aenter__(self) -> Wakeups:
        return self._ticker

    async def __aexit__(self, *_: object) -> None:
        return None


def _snapshot_event(snapshot: RunSnapshot) -> bytes:
    run = RunOut.of(snapshot.run).model_dump_json()
    executions = ExecutionsOut.of(snapshot.executions).model_dump_json()
    return _frame("snapshot", snapshot.last_change, f'{{"run":{run},"executions":{executions}}}')


def _change_event(change: RunChange) -> bytes:
    return _event(
        "change",
        change.id,
        {
            "id": change.id,
            "run_id": str(change.run_id),
            "kind": change.kind,
            "entity_id": str(change.entity_id),
            "status": str(change.status),
            "at": json_value(change.at),
            "body": change.body,
        },
    )


def _event(name: str, event_id: int, data: dict[str, Any]) -> bytes:
    return _frame(name, event_id, json.dumps(data, separators=(",", ":")))


def _frame(name: str, event_id: int, data: str) -> bytes:
    """One SSE event; ``data`` is one line of JSON (JSON text never holds a raw newline)."""
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()

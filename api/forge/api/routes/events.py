"""``GET /v1/runs/{id}/events``: watch a run as Server-Sent Events instead of polling it.

Without ``Last-Event-ID``: one ``snapshot`` event (``{"run": <GET /v1/runs/{id}>, "executions":
<GET /v1/runs/{id}/executions>}``, read in one snapshot of the database together with the id of the
newest change it includes, which is the event's ``id``), then one ``change`` event per status change
of the run, its phases, tasks and steps, in commit order, ``id`` = the change's id. With
``Last-Event-ID: N`` (the header, or ``?last_event_id=N``): no snapshot, every change after N, then
live. Once the run is final and every change is sent: an ``end`` event, and the stream closes. A
comment line every 15 s keeps idle connections open.

The process's ``ChangeFeed`` (one LISTEN connection) wakes a ``_Channel`` per watched run, which reads
the run's new rows of ``run_changes`` once for all its watchers (at most every ``BATCH`` s, longer for
a large audience) and keeps them encoded (the newest ``RING``). Each watcher takes what is newer than
its own cursor when its connection is ready for more; one that fell behind the channel reads the
table itself, a page at a time. So a watcher's memory is bounded, a slow one holds up nobody, and
100 watchers of a run cost one read per batch plus one write per watcher (``bench/watch.py``).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from litestar import get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from forge.api.errors import problem_spec
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
#: A watched run's changes are read at most every BATCH seconds (what commits in between goes out as
#: one chunk per watcher), longer for a large audience: its watchers get at most SENDS_PER_S chunks a
#: second together, up to BATCH_MAX between reads. A lone change after a quiet spell goes out at once.
BATCH = 0.1
BATCH_MAX = 0.5
SENDS_PER_S = 250
#: How often an idle run's channel reads anyway and lets its watchers check for a keep-alive.
TICK = 5.0
#: Encoded changes kept per watched run for its watchers (one further behind reads the table itself).
RING = 4096


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
    responses={
        200: ResponseSpec(str, description="An event stream", media_type="text/event-stream"),
        400: problem_spec("Invalid run id or Last-Event-ID"),
        404: problem_spec("No such run"),
        503: problem_spec("PostgreSQL unavailable"),
    },
)
async def run_events(
    run_id: FromPath[UUID],
    services: Services,
    last_event_id_header: Annotated[
        int | None,
        HeaderParameter(
            name="Last-Event-ID", ge=0, description="Resume after this event id", schema_extra={"minimum": 0}
        ),
    ] = None,
    last_event_id: Annotated[
        int | None,
        QueryParameter(
            ge=0, description="Resume after this event id (for clients that cannot set it)", schema_extra={"minimum": 0}
        ),
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
        _watch(_hub(services.runs, services.feed), run_id, after, status, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _watch(hub: _Hub, run_id: UUID, cursor: int, status: Status, first: bytes) -> AsyncIterator[bytes]:
    if first:
        yield first
    channel = None if status.is_final else hub.join(run_id, cursor)  # a final run has all its changes stored
    try:
        last_sent = time.monotonic()
        while True:
            signal = channel.signal if channel is not None else None
            if channel is not None and channel.error is not None:
                raise channel.error
            if channel is None or cursor < channel.floor:  # behind what the channel keeps: read the table
                changes = await hub.store.changes_since(run_id, cursor, limit=PAGE)
                data = b"".join(_change_event(c) for c in changes)
                cursor = changes[-1].id if changes else cursor
                status = next((c.status for c in reversed(changes) if c.kind == "run"), status)
            else:
                data, cursor, newer = channel.since(cursor)
                status = newer or status
            if data:
                yield data
                last_sent = time.monotonic()
                continue
            if status.is_final:
                yield _event("end", cursor, {"run_id": str(run_id), "status": str(status)})
                return
            if signal is not None:
                await signal.wait()  # the channel wakes its watchers at least every TICK
            if time.monotonic() - last_sent >= KEEPALIVE:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
    finally:
        if channel is not None:
            hub.leave(channel)


class _Channel:
    """The changes of one watched run, read from the table once for every watcher of it in this process
    (at most every ``BATCH`` seconds) and kept encoded, the newest ``RING`` of them. Each watcher takes
    what is newer than its own cursor when it is ready for more; one that fell behind ``floor`` reads
    the table itself, so a slow watcher holds up nobody and nothing it missed is lost."""

    def __init__(self, run_id: UUID, after: int) -> None:
        self.run_id = run_id
        self.floor = after  # every change after this id is in the ring
        self.last = after  # the newest id read
        self._ids: list[int] = []
        self._data: list[bytes] = []
        self._statuses: list[tuple[int, Status]] = []  # the run's own changes
        self.signal = asyncio.Event()  # set (and replaced) whenever changes were added
        self.error: Exception | None = None
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None

    def since(self, cursor: int) -> tuple[bytes, int, Status | None]:
        """The encoded changes after ``cursor``, the newest id among them and the run's newest status."""
        start = bisect.bisect_right(self._ids, cursor)
        if start == len(self._ids):
            return b"", cursor, None
        status = next((st for i, st in reversed(self._statuses) if i > cursor), None)
        return b"".join(self._data[start:]), self._ids[-1], status

    async def pump(self, store: RunStore, feed: ChangeFeed | None) -> None:
        try:
            async with feed.listen(self.run_id) if feed is not None else _ticking(self.run_id) as wakeups:
                # Listening before the first read: whatever commits from here on is either read or heard of.
                while True:
                    changes = await store.changes_since(self.run_id, self.last, limit=PAGE)
                    if changes:
                        self._add(changes)
                        if len(changes) == PAGE:
                            continue
                    # What commits meanwhile goes out in one chunk per watcher.
                    await asyncio.sleep(min(BATCH_MAX, max(BATCH, self.watchers / SENDS_PER_S)))
                    try:
                        async with asyncio.timeout(TICK):
                            await anext(wakeups)
                    except TimeoutError:  # read anyway (a lost notice costs at most this long), and let
                        self._wake()  # the watchers send their keep-alives
        except Exception as exc:  # noqa: BLE001 - every watcher of the run gets it (and may resume)
            self.error = exc
            self._wake()

    def _add(self, changes: list[RunChange]) -> None:
        self._ids.extend(c.id for c in changes)
        self._data.extend(_change_event(c) for c in changes)
        self._statuses.extend((c.id, c.status) for c in changes if c.kind == "run")
        self.last = changes[-1].id
        if len(self._ids) > RING:
            drop = len(self._ids) - RING
            self.floor = self._ids[drop - 1]
            del self._ids[:drop], self._data[:drop]
            self._statuses = [(i, st) for i, st in self._statuses if i > self.floor]
        self._wake()

    def _wake(self) -> None:
        self.signal.set()
        self.signal = asyncio.Event()


class _Hub:
    """The channels of the runs watched through one store and feed (one per API process)."""

    def __init__(self, store: RunStore, feed: ChangeFeed | None) -> None:
        self.store = store
        self._feed = feed
        self._channels: dict[UUID, _Channel] = {}

    def join(self, run_id: UUID, cursor: int) -> _Channel:
        channel = self._channels.get(run_id)
        if channel is None or channel.error is not None:
            channel = self._channels[run_id] = _Channel(run_id, cursor)
            channel.task = asyncio.create_task(channel.pump(self.store, self._feed), name=f"forge-watch-{run_id}")
        channel.watchers += 1
        return channel

    def leave(self, channel: _Channel) -> None:
        channel.watchers -= 1
        if channel.watchers == 0:
            if self._channels.get(channel.run_id) is channel:
                del self._channels[channel.run_id]
            if channel.task is not None:
                channel.task.cancel()


_HUBS: weakref.WeakKeyDictionary[object, _Hub] = weakref.WeakKeyDictionary()


def _hub(store: RunStore, feed: ChangeFeed | None) -> _Hub:
    key: object = feed if feed is not None else store
    hub = _HUBS.get(key)
    if hub is None:
        hub = _HUBS[key] = _Hub(store, feed)
    return hub


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

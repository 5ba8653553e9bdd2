"""``GET /v1/runs/{id}/events`` over ASGI on real PostgreSQL (the LISTEN feed included), NATS and S3.

The app is called directly (``AsgiStream``) so a test reads events as they come and disconnects when it
likes; the store is written as the controller writes it (step events, ``finish_run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_changes import PostgresChangeFeed
from forge.adapters.postgres_store import PostgresStore
from forge.api import app as app_module
from forge.api.routes import events as events_module
from forge.cli.progress import RunView
from forge.cli.sse import Event, EventParser
from forge.domain.status import Status
from forge.embedded.process import ServiceProcess
from forge.ports.store import NewRepository, NewRun, RunExecutions
from forge.testing.postgres import create_database_async

from .support import api_services, auth_headers
from .test_executions_api import _discovery, executing_run, step_event

PROBLEM = "application/problem+json"


class AsgiStream:
    """One streamed GET on an ASGI app: the status, headers and the events as they are sent."""

    def __init__(self, app: Litestar, path: str, headers: dict[str, str]) -> None:
        self._app = app
        path, _, query = path.partition("?")
        self._scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("forge.test", 80),
            "state": {},
        }
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._asked = False
        self._parser = EventParser()
        self._ready: list[Event] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.closed = False

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        await self._sent.put(message)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AsgiStream]:
        task = asyncio.create_task(self._app(self._scope, self._receive, self._send))  # type: ignore[arg-type]
        try:
            start = await asyncio.wait_for(self._sent.get(), 10)
            self.status = start["status"]
            self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
            yield self
        finally:
            self._gone.set()  # the client goes away
            await asyncio.wait_for(task, 10)

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            while not self._ready:
                message = await self._sent.get()
                chunk = message.get("body", b"")
                self.body += chunk
                self._ready.extend(self._parser.feed(chunk.decode()))
                if not message.get("more_body", False):
                    self.closed = True
                    if not self._ready:
                        raise EOFError("the stream ended")
            return self._ready.pop(0)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the server ends the response (an event after that is a failure)."""
        async with asyncio.timeout(timeout):
            while not self.closed:
                message = await self._sent.get()
                assert not message.get("body"), message
                self.closed = not message.get("more_body", False)

    async def events_until(self, name: str, timeout: float = 10.0) -> list[Event]:
        got = [await self.next_event(timeout)]
        while got[-1].event != name:
            got.append(await self.next_event(timeout))
        return got

    @property
    def comments(self) -> int:
        return self._parser.comments


@pytest.fixture
async def dsn(postgres_server: ServiceProcess) -> str:
    return await create_database_async(postgres_server.url, f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.connect(dsn, min_size=1, max_size=5)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
async def app(dsn: str, store: PostgresStore, bus: NatsBus, objects: MinioObjectStore) -> AsyncIterator[Litestar]:
    async with PostgresChangeFeed.open(dsn) as feed:
        yield app_module.create_app(dataclasses.replace(api_services(store, bus, objects), feed=feed))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test", headers=auth_headers()) as client:
        yield client


def watch(app: Litestar, run_id: uuid.UUID, last_id: int | None = None, *, query: bool = False) -> AsgiStream:
    path = f"/v1/runs/{run_id}/events"
    headers = {"accept": "text/event-stream", **auth_headers()}
    if last_id is not None and query:
        path += f"?last_event_id={last_id}"
    elif last_id is not None:
        headers["last-event-id"] = str(last_id)
    return AsgiStream(app, path, headers)


def changes(events: list[Event]) -> list[dict[str, Any]]:
    return [e.json() for e in events if e.event == "change"]


async def test_a_snapshot_then_every_change_in_order_then_end(
    app: Litestar, client: httpx.AsyncClient, store: PostgresStore
) -> None:
    ex = await executing_run(store)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    image = ex.step_id("build", "api", "image")
    async with watch(app, ex.run_id).open() as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        snapshot = await stream.next_event()
        assert snapshot.event == "snapshot"
        data = snapshot.json()
        assert data["run"] == (await client.get(f"/v1/runs/{ex.run_id}")).json()
        assert data["executions"] == (await client.get(f"/v1/runs/{ex.run_id}/executions")).json()
        newest = await store.changes_since(ex.run_id, 0, limit=1000)
        assert snapshot.id == str(newest[-1].id)
        view = RunView(data["run"], data["executions"])

        await step_event(store, ex, unit, "started", logs_key="logs/unit.log")
        got = [await stream.next_event() for _ in range(3)]
        assert [(c["kind"], c["status"]) for c in changes(got)] == [
            ("step", "running"),
            ("task", "running"),
            ("phase", "running"),
        ]
        assert changes(got)[0]["entity_id"] == str(unit)
        assert changes(got)[0]["body"]["logs_key"] == "logs/unit.log"

        await step_event(store, ex, unit, "success", exit_code=0)
        await step_event(store, ex, lint, "failed", exit_code=2, message="lint errors")
        await store.finish_run(ex.run_id, Status.FAILED, error="a step failed", code="step_failed")
        got += await stream.events_until("end")
        end = got[-1]
        assert end.json() == {"run_id": str(ex.run_id), "status": "failed"}
        await stream.wait_closed()  # the server closes the stream
    ids = [int(e.id or 0) for e in got[:-1]]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert end.id == str(ids[-1])
    assert changes(got) == [c.json() for c in got[:-1]]
    stored = await store.changes_since(ex.run_id, int(snapshot.id or 0), limit=1000)
    assert [c["id"] for c in changes(got)] == [c.id for c in stored]  # every change, once, in order
    assert changes(got)[-1]["kind"] == "run"
    assert {(c["entity_id"], c["status"]) for c in changes(got) if c["kind"] == "step"} == {
        (str(unit), "running"),
        (str(unit), "success"),
        (str(lint), "failed"),
        (str(image), "skipped"),
    }

    # The snapshot and the changes make exactly what the reads show at the end.
    for change in changes(got):
        view.apply(change)
    run = (await client.get(f"/v1/runs/{ex.run_id}")).json()
    executions = (await client.get(f"/v1/runs/{ex.run_id}/executions")).json()
    assert {k: view.run[k] for k in run if k not in {"updated_at", "discovery"}} == {
        k: v for k, v in run.items() if k not in {"updated_at", "discovery"}
    }
    assert _statuses(view.executions) == _statuses(executions)

    # A finished run: the snapshot, then at once the end.
    async with watch(app, ex.run_id).open() as again:
        late = await again.events_until("end")
        assert [e.event for e in late] == ["snapshot", "end"]
        assert late[0].json()["executions"] == executions


def _statuses(executions: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for phase in executions["phases"]:
        out.append((phase["id"], phase["status"], phase["started_at"], phase["completed_at"]))
        for task in phase["tasks"]:
            out.append((task["id"], task["status"], task["started_at"], task["completed_at"]))
            out.extend(
                (s["id"], s["status"], s["exit_code"], s["attempts"], s["logs_key"], s["started_at"], s["completed_at"])
                for s in task["steps"]
            )
    return out


@pytest.mark.parametrize("by_query", [False, True], ids=["header", "query"])
async def test_a_watcher_that_reconnects_with_last_event_id_misses_no_transition(
    app: Litestar, store: PostgresStore, by_query: bool
) -> None:
    ex = await executing_run(store)
    steps = [s.id for s in ex.steps]
    steady = watch(app, ex.run_id)  # stays connected throughout: the reference
    async with steady.open():
        first = await steady.next_event()
        assert first.event == "snapshot"

        flaky = watch(app, ex.run_id)
        async with flaky.open():
            assert (await flaky.next_event()).event == "snapshot"
            await step_event(store, ex, steps[0], "started")
            seen = [await flaky.next_event() for _ in range(3)]  # step, task, phase
        assert not flaky.closed  # the client went away mid-stream

        # While it is away: transitions of several steps, one transaction each.
        await step_event(store, ex, steps[0], "success", exit_code=0)
        await step_event(store, ex, steps[1], "started")
        await step_event(store, ex, steps[2], "started")
        await step_event(store, ex, steps[1], "success", exit_code=0)

        resumed = watch(app, ex.run_id, int(seen[-1].id or 0), query=by_query)
        async with resumed.open():
            await step_event(store, ex, steps[2], "success", exit_code=0)  # and one after it is back
            await store.finish_run(ex.run_id, Status.SUCCESS)
            rest = await resumed.events_until("end")
        assert rest[0].event == "change"  # no second snapshot
        reference = await steady.events_until("end")

    reconnected = changes(seen) + changes(rest)
    assert [c["id"] for c in reconnected] == [c["id"] for c in changes(reference)]  # none missing, none repeated
    assert reconnected == changes(reference)
    transitions = [(c["entity_id"], c["status"]) for c in reconnected if c["kind"] == "step"]
    assert transitions == [
        (str(steps[0]), "running"),
        (str(steps[0]), "success"),
        (str(steps[1]), "running"),
        (str(steps[2]), "running"),
        (str(steps[1]), "success"),
        (str(steps[2]), "success"),
    ]
    stored = await store.changes_since(ex.run_id, int(first.id or 0), limit=1000)
    assert [c["id"] for c in reconnected] == [c.id for c in stored]


async def test_a_run_followed_from_its_creation_is_announced_as_it_is_planned(
    app: Litestar, store: PostgresStore
) -> None:
    await store.register_repository(NewRepository("acme/x", "/srv/x"))
    run, _ = await store.create_run(NewRun(repository="acme/x", commit_sha="d" * 40))
    async with watch(app, run.id).open() as stream:
        snapshot = (await stream.next_event()).json()
        assert (snapshot["run"]["status"], snapshot["executions"]["phases"]) == ("pending", [])
        view = RunView(snapshot["run"], snapshot["executions"])
        await store.claim_discovery(limit=1)
        found = _discovery("d" * 40)
        await store.record_discovery(run.id, found, "d/x")
        planned: RunExecutions = await store.create_executions(run.id, found)
        await store.set_workflow(run.id, "wf")
        await store.finish_run(run.id, Status.CANCELLED, code="cancelled")
        for event in await stream.events_until("end"):
            if event.event == "change":
                view.apply(event.json())
    assert [(p["name"], [t["project"] for t in p["tasks"]]) for p in view.executions["phases"]] == [
        (p.name, [t.project for t in planned.tasks_of(p.id)]) for p in planned.phases
    ]
    assert [s["name"] for p in view.executions["phases"] for t in p["tasks"] for s in t["steps"]] == [
        s.name for s in planned.steps
    ]
    assert {s["status"] for p in view.executions["phases"] for t in p["tasks"] for s in t["steps"]} == {"skipped"}
    assert (view.run["status"], view.run["discovery_status"], view.run["workflow_name"]) == (
        "cancelled",
        "success",
        "wf",
    )


async def test_an_idle_stream_is_kept_alive(
    app: Litestar, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "KEEPALIVE", 0.1)
    monkeypatch.setattr(events_module, "TICK", 0.05)
    ex = await executing_run(store)
    async with watch(app, ex.run_id).open() as stream:
        await stream.next_event()
        await asyncio.sleep(0.5)
        await step_event(store, ex, ex.steps[0].id, "started")
        await stream.next_event()
    assert stream.comments >= 2
    assert b": keep-alive\n\n" in stream.body


async def test_unknown_runs_and_bad_ids_are_refused_before_the_stream(
    app: Litestar, client: httpx.AsyncClient, store: PostgresStore
) -> None:
    missing = uuid.uuid4()
    for headers in ({}, {"Last-Event-ID": "5"}):
        response = await client.get(f"/v1/runs/{missing}/events", headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith(PROBLEM)
        assert str(missing) in json.dumps(response.json())
    ex = await executing_run(store)
    assert (await client.get(f"/v1/runs/{ex.run_id}/events", headers={"Last-Event-ID": "x"})).status_code == 400
    assert (await client.get(f"/v1/runs/{ex.run_id}/events", params={"last_event_id": "-1"})).status_code == 400
    spec = (await client.get("/schema/openapi.json")).json()
    operation = spec["paths"]["/v1/runs/{run_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]


async def test_without_a_feed_watchers_still_see_every_change(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore
) -> None:
    app = app_module.create_app(api_services(store, bus, objects))
    ex = await executing_run(store)
    async with watch(app, ex.run_id).open() as stream:
        await stream.next_event()
        await step_event(store, ex, ex.steps[0].id, "started")
        got = [await stream.next_event(5) for _ in range(3)]
    assert [c["kind"] for c in changes(got)] == ["step", "task", "phase"]

"""The platform's whole NATS authorization on a real nats-server: the server runs with exactly the users
``forge.jobs.nats_permissions.users`` generates (the controller, the API, the step dispatcher, the workers of
pools ``default`` and ``b``), each client connects as its own user through ``NatsBus.from_settings`` with its
own inbox prefix, and a run's jobs go end to end: the controller creates the streams and both pools'
consumers, ``forge-step dispatch`` publishes a CI job for each pool, each pool's worker serves its own, the
results come back; the controller dispatches a discovery job, records step events, cancels a run and reads
what its metrics read. What a user is not given is refused by the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import nats
import pytest
from pydantic import SecretStr

from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.reconcilers.pools import PoolConsumers
from forge.controller.step_events import StepEventRecorder
from forge.domain.events import EVENTS_CONSUMER, EVENTS_STREAM, event_subject
from forge.domain.messages import CANCELS_STREAM, STREAM_OF, STREAMS, Job, JobType, cancel_subject
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_name
from forge.jobs.dispatch import Dispatcher
from forge.jobs.nats_permissions import (
    API_USER,
    CONTROLLER_INBOX,
    CONTROLLER_USER,
    STEP_INBOX,
    STEP_USER,
    inbox_prefix,
    pool_user_name,
    users,
)
from forge.ports import ExecutionStore, ObjectStore
from forge.ports.store import NewRepository
from forge.settings import NatsSettings, TimeoutSettings, WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.steps.entry import EXIT_OK, run_step
from forge.workflows.workers.runtime import Worker

SETTINGS = WorkerSettings(ack_wait=5.0, heartbeat=1.0, max_deliver=2, fetch_wait=0.1)
POOLS = ("default", "b")


def _password(user: str) -> str:
    return f"secret-of-{user}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    config = tmp_path / "nats.conf"  # JSON is nats-server configuration
    config.write_text(json.dumps({"authorization": {"users": users(["b"], password=_password)}}))
    proc = start_nats(tmp_path / "nats", config=config)
    yield proc
    proc.stop()


async def _connect(server: ServiceProcess, user: str, inbox: str = "_INBOX") -> NatsBus:
    """A connection as ``forge-*`` makes it: ``FORGE_NATS__URL``, ``__USER`` and ``__PASSWORD``."""
    settings = NatsSettings(url=server.url, user=user, password=SecretStr(_password(user)))
    return await NatsBus.from_settings(settings, inbox_prefix=inbox)


@contextlib.asynccontextmanager
async def _client(server: ServiceProcess, user: str, inbox: str = "_INBOX") -> AsyncIterator[NatsBus]:
    bus = await _connect(server, user, inbox)
    try:
        yield bus
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def _workers(server: ServiceProcess, pool: str, seen: list[Job]) -> AsyncIterator[NatsBus]:
    """One ``forge-worker discovery ci`` process of ``pool``, as ``pool``'s user; yields its connection."""

    async def handler(job: Job) -> dict[str, Any]:
        seen.append(job)
        return {"pool": pool}

    async with _client(server, pool_user_name(pool), inbox_prefix(pool)) as bus:
        await bus.ensure_streams(STREAMS)  # forge-worker's start: the streams are as wanted, nothing to write
        settings = SETTINGS.model_copy(update={"pool": pool})
        objects = cast(ObjectStore, object())
        workers = [
            Worker(job_type=t, handler=handler, bus=bus, objects=objects, settings=settings) for t in POOL_JOB_TYPES
        ]
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker.run(stop))
            yield bus
            stop.set()


@pytest.fixture
async def controller(server: ServiceProcess, store: PostgresStore) -> AsyncIterator[NatsBus]:
    """``forge-controller``'s connection after its start: the streams created, every pool's consumers too."""
    async with _client(server, CONTROLLER_USER, CONTROLLER_INBOX) as bus:
        await bus.ensure_streams(STREAMS)
        await store.register_repository(NewRepository("org-b/app", "https://git.example/b.git", pool="b"))
        created = await PoolConsumers(store, bus, SETTINGS).ensure_all()
        assert {(c.stream, c.name) for c in created} >= {
            (STREAM_OF[t], consumer_name(t, pool)) for t in POOL_JOB_TYPES for pool in POOLS
        }
        yield bus


def _ci_step(pool: str) -> list[str]:
    """The command line of a CI step's Argo task (``forge-step dispatch``) for a repository of ``pool``."""
    run = uuid4()
    payload = {
        "clone_url": "https://git.example/b.git",
        "phase": "test",
        "project": "app",
        "project_path": "app",
        "step": "unit",
        "action": "run",
        "target": "test",
        "timeout_seconds": 60,
    }
    return [
        "dispatch",
        "--job-type=ci",
        f"--key=ci.{run}.test.app.unit",
        f"--run-id={run}",
        "--repository=org-b/app",
        f"--commit={'ab' * 20}",
        f"--pool={pool}",
        f"--payload={json.dumps(payload)}",
        "--timeout=30",
    ]


async def test_steps_dispatch_jobs_each_pool_serves_its_own_and_the_results_come_back(
    server: ServiceProcess, controller: NatsBus
) -> None:
    seen: dict[str, list[Job]] = {pool: [] for pool in POOLS}
    results: dict[str, dict[str, Any]] = {}
    async with _workers(server, "default", seen["default"]), _workers(server, "b", seen["b"]):
        for pool in POOLS:  # one step pod each, as forge-step
            async with _client(server, STEP_USER, STEP_INBOX) as step:
                outcome = await run_step(_ci_step(pool), bus=step, timeouts=TimeoutSettings())
            assert outcome.exit_code == EXIT_OK, outcome.stderr
            results[pool] = json.loads(outcome.stdout)
        async with Dispatcher(controller, inbox_prefix=CONTROLLER_INBOX) as dispatcher:
            discovered = await dispatcher.dispatch(discovery_job(pool="b"), timeout=30)
    assert {pool: r["data"] for pool, r in results.items()} == {pool: {"pool": pool} for pool in POOLS}
    assert discovered.data == {"pool": "b"}
    assert [j.type for j in seen["default"]] == [JobType.CI]
    assert sorted(j.type for j in seen["b"]) == sorted([JobType.CI, JobType.DISCOVERY])


async def test_the_controller_records_events_cancels_and_reads_the_streams_as_its_user(
    server: ServiceProcess, controller: NatsBus
) -> None:
    run = uuid4()
    recorder = StepEventRecorder(executions=cast(ExecutionStore, object()), bus=controller)
    await recorder.prepare()  # creates the events consumer
    async with _client(server, pool_user_name("b"), inbox_prefix("b")) as worker:
        await worker.publish(event_subject(run), b"{}")  # a step event, as a worker publishes it
        fetched = await controller.fetch(EVENTS_STREAM, EVENTS_CONSUMER, batch=10, timeout=5)
        assert [m.subject for m in fetched] == [event_subject(run)]
        await fetched[0].ack()
        await controller.publish(cancel_subject(run), str(run).encode(), msg_id=f"cancel.{run}")
        assert await worker.last_payload(CANCELS_STREAM, cancel_subject(run)) == str(run).encode()
    first, last = await controller.stream_bounds(EVENTS_STREAM)
    assert first > last  # acked: the work-queue stream let go of the event
    for spec in STREAMS:  # the metrics sampler's reads
        await controller.stream_bounds(spec.name)
    assert set(await controller.consumer_lag(STREAM_OF[JobType.CI])) >= {"ci-consumer", "ci-b-consumer"}


async def _refused(server: ServiceProcess, user: str, inbox: str, subscribe: list[str], publish: list[str]) -> None:
    """Connect as ``user`` and try each subscription and publish: the server refuses every one."""
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc).removeprefix("nats: ").lower())

    nc = await nats.connect(server.url, user=user, password=_password(user), inbox_prefix=inbox, error_cb=record)
    try:
        for subject in subscribe:
            await nc.subscribe(subject)
        for subject in publish:
            await nc.publish(subject, b"{}", reply=f"{inbox}.reply")
        await nc.flush()
        refused = [f'subscription to "{s}"' for s in subscribe] + [f'publish to "{s}"' for s in publish]
        async with asyncio.timeout(30):
            while not all(f"permissions violation for {what}".lower() in errors for what in refused):
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def test_the_step_and_api_users_are_refused_what_they_do_not_do(
    server: ServiceProcess, controller: NatsBus
) -> None:
    workers_inboxes = ["_INBOX.>", "_INBOX.default.>", f"{CONTROLLER_INBOX}.>", "pipeline.discovery.>"]
    step_publishes = [
        "$JS.API.CONSUMER.MSG.NEXT.pipeline-tasks.ci-consumer",  # taking a pool's jobs
        "$JS.API.STREAM.DELETE.pipeline-tasks",
        "pipeline.discovery.b.x",  # discovery is the controller's
        "pipeline.events.x",
        "pipeline.cancel.x",
    ]
    await _refused(server, STEP_USER, STEP_INBOX, workers_inboxes, step_publishes)
    await _refused(server, API_USER, "_INBOX", ["_INBOX.>", "pipeline.results.>"], ["pipeline.tasks.default.x"])
    async with _client(server, API_USER) as api:
        await api.ping()  # the API's health check

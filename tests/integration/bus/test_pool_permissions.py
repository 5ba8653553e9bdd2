"""Per-pool NATS users on a real nats-server configured with exactly the permissions
``forge.jobs.nats_permissions`` generates: a worker of pool ``b`` connected as ``b``'s user starts as
``forge-worker`` does and serves ``b``'s jobs; as ``b``'s user, pool ``a``'s job subjects, consumers and
inboxes are refused by the server (a permissions violation), and ``a``'s job stays queued."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import nats
import pytest

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAM_OF, STREAMS, Job, JobType
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.errors import ForgeError
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_config, ensure_consumer
from forge.jobs.dispatch import Dispatcher
from forge.jobs.nats_permissions import inbox_prefix, pool_user
from forge.ports import ObjectStore
from forge.settings import WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.workers.runtime import Worker

DISCOVERY = STREAM_OF[JobType.DISCOVERY]
SETTINGS = WorkerSettings(ack_wait=5.0, heartbeat=1.0, max_deliver=2, fetch_wait=0.1)
PASSWORDS = {"a": "secret-a", "b": "secret-b"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    users = [{"user": "forge", "password": "forge"}]  # the controller and dispatchers: every subject
    users += [pool_user(pool, password) for pool, password in PASSWORDS.items()]
    config = tmp_path / "nats.conf"
    config.write_text(json.dumps({"authorization": {"users": users}}))  # JSON is nats-server configuration
    proc = start_nats(tmp_path / "nats", config=config)
    yield proc
    proc.stop()


def _url(server: ServiceProcess, user: str, password: str) -> str:
    return server.url.replace("nats://", f"nats://{user}:{password}@")


@pytest.fixture
async def admin(server: ServiceProcess) -> AsyncIterator[NatsBus]:
    """The controller's connection: the streams, and every pool's consumers (``PoolConsumers``)."""
    bus = await NatsBus.connect(_url(server, "forge", "forge"))
    await bus.ensure_streams(STREAMS)
    for pool in PASSWORDS:
        for job_type in POOL_JOB_TYPES:
            await ensure_consumer(bus, consumer_config(job_type, pool, SETTINGS))
    try:
        yield bus
    finally:
        await bus.close()


async def _pool_bus(server: ServiceProcess, pool: str) -> NatsBus:
    """A worker process's connection as ``pool``'s user (``forge-worker`` connects with the pool's inbox prefix)."""
    return await NatsBus.connect(_url(server, f"forge-worker-{pool}", PASSWORDS[pool]), inbox_prefix=inbox_prefix(pool))


@contextlib.asynccontextmanager
async def _worker(bus: NatsBus, pool: str, seen: list[Job]) -> AsyncIterator[None]:
    async def handler(job: Job) -> dict[str, Any]:
        seen.append(job)
        return {"pool": pool}

    worker = Worker(
        job_type=JobType.DISCOVERY,
        handler=handler,
        bus=bus,
        objects=cast(ObjectStore, object()),
        settings=SETTINGS.model_copy(update={"pool": pool}),
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        yield
        stop.set()


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            outcome = check()
            if await outcome if not isinstance(outcome, bool) else outcome:
                return
            await asyncio.sleep(0.05)


async def test_a_worker_of_pool_b_as_bs_user_serves_bs_jobs(server: ServiceProcess, admin: NatsBus) -> None:
    bus = await _pool_bus(server, "b")
    try:
        await bus.ensure_streams(STREAMS)  # forge-worker's start: the streams are as wanted, nothing to write
        seen: list[Job] = []
        job = discovery_job(pool="b")
        async with _worker(bus, "b", seen), Dispatcher(admin) as dispatcher:
            result = await dispatcher.dispatch(job, timeout=30)  # the reply comes to the controller's inbox
    finally:
        await bus.close()
    assert result.data == {"pool": "b"}
    assert [j.key for j in seen] == [job.key]


async def test_as_bs_user_pool_as_jobs_consumers_and_inboxes_are_refused(
    server: ServiceProcess, admin: NatsBus
) -> None:
    queued = discovery_job(pool="a")
    await admin.publish(queued.subject, queued.model_dump_json().encode(), msg_id=queued.key)
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc).removeprefix("nats: "))

    nc = await nats.connect(
        _url(server, "forge-worker-b", PASSWORDS["b"]), inbox_prefix=inbox_prefix("b"), error_cb=record
    )
    try:
        subscriptions = ["pipeline.discovery.a.>", "_INBOX.>", "_INBOX.a.>"]
        publishes = [
            "$JS.API.CONSUMER.MSG.NEXT.pipeline-discovery.discovery-a-consumer",
            "$JS.API.CONSUMER.INFO.pipeline-discovery.discovery-a-consumer",
            # b's own consumer re-pointed at a's jobs: the filter is part of the subject b may use
            "$JS.API.CONSUMER.CREATE.pipeline-discovery.discovery-b-consumer.pipeline.discovery.a.>",
            "$JS.API.STREAM.UPDATE.pipeline-discovery",
            "pipeline.discovery.a.x",
        ]
        for subject in subscriptions:
            await nc.subscribe(subject)
        for subject in publishes:
            await nc.publish(subject, b"{}", reply="_INBOX.b.reply")
        await nc.flush()
        refused = [f'subscription to "{s}"' for s in subscriptions] + [f'publish to "{s}"' for s in publishes]
        # nats-py lower-cases the server's "-ERR 'Permissions Violation for …'"
        await until(lambda: all(f"permissions violation for {what}".lower() in errors for what in refused))
    finally:
        await nc.close()

    bus = await _pool_bus(server, "b")
    try:  # through the adapter: a's consumer does not answer b (its request is dropped), a's job stays queued
        with pytest.raises(ForgeError):
            await bus.fetch(DISCOVERY, "discovery-a-consumer", batch=1, timeout=0.5)
    finally:
        await bus.close()
    assert (await admin.consumer_lag(DISCOVERY))["discovery-a-consumer"] == 1

"""The controller creates every pool's consumers (``PoolConsumers``) on real NATS JetStream and PostgreSQL: a
repository registered in pool ``b`` gives ``b`` its consumers before any worker of ``b`` ran, so a job of ``b``
shows as lag (what KEDA scales a pool at zero on) and a worker of ``b`` started later takes it. The consumer
is the one a worker creates; whoever comes second leaves it working, and a worker's own settings win."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import nats
import pytest

from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.reconcilers.pools import PoolConsumers
from forge.domain.messages import STREAM_OF, STREAMS, Job, JobType
from forge.embedded.process import ServiceProcess
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_config, consumer_name
from forge.jobs.dispatch import stored_result
from forge.ports import ObjectStore
from forge.ports.store import NewRepository
from forge.settings import WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.workers.runtime import Worker

DISCOVERY = STREAM_OF[JobType.DISCOVERY]
SETTINGS = WorkerSettings(ack_wait=7.0, max_deliver=4, heartbeat=1.0, fetch_wait=0.1)


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def streams(bus: NatsBus) -> NatsBus:
    await bus.ensure_streams(STREAMS)  # forge-controller's start does it
    return bus


@contextlib.asynccontextmanager
async def controller(store: PostgresStore, bus: NatsBus, settings: WorkerSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(PoolConsumers(store, bus, settings, interval=0.05).run(stop))
        yield
        stop.set()


@contextlib.asynccontextmanager
async def worker(url: str, pool: str, settings: WorkerSettings, seen: list[Job]) -> AsyncIterator[None]:
    """A discovery worker of ``pool`` on its own connection, as ``forge-worker discovery`` runs it."""
    bus = await NatsBus.connect(url)

    async def handler(job: Job) -> dict[str, Any]:
        seen.append(job)
        return {"pool": pool}

    runner = Worker(
        job_type=JobType.DISCOVERY,
        handler=handler,
        bus=bus,
        objects=cast(ObjectStore, object()),
        settings=settings.model_copy(update={"pool": pool}),
    )
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(runner.run(stop))
            yield
            stop.set()
    finally:
        await bus.close()


async def consumer_info(url: str, stream: str, name: str) -> tuple[str | None, float | None, int | None]:
    """(filter, ack_wait, max_deliver) as the server holds them."""
    nc = await nats.connect(url)
    try:
        config = (await nc.jetstream().consumer_info(stream, name)).config
    finally:
        await nc.close()
    return config.filter_subject, config.ack_wait, config.max_deliver


async def test_a_pool_has_its_consumers_before_its_first_worker_and_that_worker_takes_its_queued_job(
    store: PostgresStore, streams: NatsBus, own_nats: ServiceProcess
) -> None:
    bus = streams
    async with controller(store, bus, SETTINGS):
        await until(lambda: _has(bus, DISCOVERY, "discovery-consumer"))  # the default pool, with no repository
        await store.register_repository(NewRepository("org-b/app", "https://git.example/b.git", pool="b"))
        for job_type in POOL_JOB_TYPES:
            await until(functools.partial(_has, bus, STREAM_OF[job_type], consumer_name(job_type, "b")))
    assert "ci-b-consumer" in await bus.consumer_lag(STREAM_OF[JobType.CI])
    for job_type in POOL_JOB_TYPES:  # exactly what a worker of b creates
        wanted = consumer_config(job_type, "b", SETTINGS)
        held = await consumer_info(own_nats.url, wanted.stream, wanted.name)
        assert held == (wanted.filter_subject, wanted.ack_wait, wanted.max_deliver)

    job = discovery_job(pool="b")
    await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key)
    lag = await bus.consumer_lag(DISCOVERY)
    assert lag == {"discovery-consumer": 0, "discovery-b-consumer": 1}  # b's lag: KEDA wakes b up

    seen: list[Job] = []
    async with worker(own_nats.url, "b", SETTINGS, seen):
        await until(lambda: _stored(bus, job.key))
    result = await stored_result(bus, job.key)
    assert result is not None
    assert result.data == {"pool": "b"}
    assert [j.key for j in seen] == [job.key]
    assert await bus.consumer_lag(DISCOVERY) == {"discovery-consumer": 0, "discovery-b-consumer": 0}


async def test_a_worker_keeps_its_own_settings_whether_it_or_the_controller_made_the_consumer(
    store: PostgresStore, streams: NatsBus, own_nats: ServiceProcess
) -> None:
    bus = streams
    mine = SETTINGS.model_copy(update={"ack_wait": 3.0, "max_deliver": 2})  # a worker configured apart
    await store.register_repository(NewRepository("org-b/app", "https://git.example/b.git", pool="b"))
    await store.register_repository(NewRepository("org-c/app", "https://git.example/c.git", pool="c"))
    seen: list[Job] = []
    async with worker(own_nats.url, "c", mine, seen):  # c's worker first, then the controller
        await until(lambda: _has(bus, DISCOVERY, "discovery-c-consumer"))
        async with controller(store, bus, SETTINGS):
            await until(lambda: _has(bus, DISCOVERY, "discovery-b-consumer"))
        held = await consumer_info(own_nats.url, DISCOVERY, "discovery-c-consumer")
        assert held == ("pipeline.discovery.c.>", 3.0, 2)  # the controller created b's, left c's as it was
        job = discovery_job(pool="c")
        await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key)
        await until(lambda: _stored(bus, job.key))
    assert await consumer_info(own_nats.url, DISCOVERY, "discovery-b-consumer") == ("pipeline.discovery.b.>", 7.0, 4)
    job = discovery_job(pool="b")
    await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key)
    async with worker(own_nats.url, "b", mine, seen):  # the controller first: b's worker brings it to its own
        await until(lambda: _stored(bus, job.key))
        held = await consumer_info(own_nats.url, DISCOVERY, "discovery-b-consumer")
        assert held == ("pipeline.discovery.b.>", 3.0, 2)
    assert sorted(j.pool for j in seen) == ["b", "c"]


async def _has(bus: NatsBus, stream: str, consumer: str) -> bool:
    return consumer in await bus.consumer_lag(stream)


async def _stored(bus: NatsBus, key: str) -> bool:
    return await stored_result(bus, key) is not None

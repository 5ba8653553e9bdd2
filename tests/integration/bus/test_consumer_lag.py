"""``MessageBus.consumer_lag`` on both adapters: per durable consumer, the jobs its filter matches that are
queued (not delivered) or in flight (delivered, not acked) — one consumer per worker pool, so a pool's lag."""

from __future__ import annotations

import asyncio

import pytest

from forge.domain.messages import JobType, StreamSpec, pool_filter
from forge.errors import NotFoundError
from forge.ports.bus import MessageBus

TASKS = StreamSpec(name="pipeline-tasks", subjects=("pipeline.tasks.>",), work_queue=True)


async def test_each_pools_consumer_counts_its_own_queued_and_unacked_jobs(bus: MessageBus) -> None:
    await bus.ensure_streams([TASKS])
    for pool in ("a", "b"):
        await bus.ensure_consumer(
            TASKS.name, f"ci-{pool}-consumer", filter_subject=pool_filter(JobType.CI, pool), ack_wait=30, max_deliver=3
        )
    assert await bus.consumer_lag(TASKS.name) == {"ci-a-consumer": 0, "ci-b-consumer": 0}
    for n in range(3):
        await bus.publish(f"pipeline.tasks.b.run.{n}", b"{}")
    await bus.publish("pipeline.tasks.a.run.0", b"{}")
    await bus.publish("pipeline.tasks.c.run.0", b"{}")  # a pool without a consumer: in no pool's lag
    assert await bus.consumer_lag(TASKS.name) == {"ci-a-consumer": 1, "ci-b-consumer": 3}
    fetched = await bus.fetch(TASKS.name, "ci-b-consumer", batch=2, timeout=5)
    assert len(fetched) == 2
    assert await bus.consumer_lag(TASKS.name) == {"ci-a-consumer": 1, "ci-b-consumer": 3}  # in flight counts
    await fetched[0].ack()
    await fetched[1].ack()
    async with asyncio.timeout(10):  # an ack is fire-and-forget on NATS: the server counts it when it reads it
        while (await bus.consumer_lag(TASKS.name))["ci-b-consumer"] != 1:
            await asyncio.sleep(0.01)
    assert await bus.consumer_lag(TASKS.name) == {"ci-a-consumer": 1, "ci-b-consumer": 1}


async def test_the_lag_of_a_missing_stream_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFoundError):
        await bus.consumer_lag("pipeline-none")

"""``PoolConsumers`` on the memory store and bus: one pass creates the consumers a worker of each pool in use
would create (the default pool's always), and only those missing; the pools' job types are the workers'."""

from __future__ import annotations

from forge.controller.reconcilers.pools import PoolConsumers
from forge.domain.messages import STREAM_OF, STREAMS, JobType
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_config
from forge.ports.fakes import MemoryBus, MemoryStore
from forge.ports.store import NewRepository
from forge.settings import WorkerSettings
from forge.workflows.workers.registry import HANDLERS

from .support import CLONE_URL


def test_a_pool_serves_every_job_type_forge_worker_has_a_handler_for() -> None:
    assert set(POOL_JOB_TYPES) == set(HANDLERS)


async def test_each_pass_creates_the_missing_consumers_of_the_pools_in_use() -> None:
    store, bus, settings = MemoryStore(), MemoryBus(), WorkerSettings(ack_wait=12.0, max_deliver=5)
    await bus.ensure_streams(STREAMS)
    pools = PoolConsumers(store, bus, settings)
    first = await pools.ensure_all()
    assert first == [consumer_config(t, "default", settings) for t in POOL_JOB_TYPES]
    assert await pools.ensure_all() == []
    await store.register_repository(NewRepository("acme/app", CLONE_URL))
    await store.register_repository(NewRepository("org-b/app", CLONE_URL, pool="org-b"))
    created = await pools.ensure_all()
    assert [c.name for c in created] == [
        "discovery-org-b-consumer",
        "ci-org-b-consumer",
        "artifact-org-b-consumer",
        "release-org-b-consumer",
    ]
    assert await bus.consumer_lag(STREAM_OF[JobType.CI]) == {"ci-consumer": 0, "ci-org-b-consumer": 0}
    assert await pools.ensure_all() == []

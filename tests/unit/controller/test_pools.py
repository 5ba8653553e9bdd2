"""The discovery job of a run carries its repository's worker pool: a discovery worker of that pool runs it
(the real Dispatcher, Worker and DiscoveryReconciler on the memory store and bus)."""

from __future__ import annotations

from typing import Any

from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.discovery import DiscoveryReconciler
from forge.domain.messages import STREAMS, Job, JobType
from forge.domain.status import Status
from forge.jobs.dispatch import Dispatcher
from forge.ports.fakes import MemoryBus, MemoryStore
from forge.ports.store import NewRepository
from forge.settings import WorkerSettings
from forge.workflows.workers.runtime import Worker

from .support import CLONE_URL, REPO, DictObjects, Observed, discovery, pending_run, running


async def test_a_repository_in_pool_b_has_its_discovery_run_by_pool_bs_worker() -> None:
    store, bus, objects = MemoryStore(), MemoryBus(), DictObjects()
    await bus.ensure_streams(STREAMS)
    await store.register_repository(NewRepository(REPO, CLONE_URL, pool="b"))
    jobs: list[Job] = []

    async def handler(job: Job) -> dict[str, Any]:
        jobs.append(job)
        key = f"pipeline-runs/{job.run_id}/discovery.json"
        await objects.put(key, discovery().model_dump_json().encode(), content_type="application/json")
        return {"object_key": key}

    settings = WorkerSettings(pool="b", concurrency=2, ack_wait=30.0, heartbeat=5.0, fetch_wait=0.02)
    async with Dispatcher(bus, recheck=0.05) as dispatcher:
        reconciler = Observed(
            DiscoveryReconciler(runs=store, repositories=store, dispatcher=dispatcher, objects=objects, timeout=10)
        )
        loop_service = ReconcileLoop(reconciler, poll_interval=0.005, backoff_max=0.01).run
        worker = Worker(JobType.DISCOVERY, handler, bus.connect(), objects, settings)
        async with running(loop_service, worker.run) as loop:
            run = await pending_run(store)  # registered before: stays in pool b

            async def discovered() -> bool:
                return (await store.get_run(run.id)).discovery_status is Status.SUCCESS

            await loop.until(discovered)
    [job] = jobs
    assert (job.pool, job.subject) == ("b", f"pipeline.discovery.b.{run.id}")
    assert await bus.consumer_lag("pipeline-discovery") == {"discovery-b-consumer": 0}

"""DiscoveryReconciler on ReconcileLoop, with the real Dispatcher and the real Worker (a scripted handler).

Store, bus and object storage are in memory; the worker pulls the discovery job from the bus,
stores its result on ``pipeline.results.<key>``, replies to the dispatcher's inbox and acks, as a
``forge-worker discovery`` process does. The handler stands in for mirror sync + ``discover()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.discovery import DiscoveryReconciler
from forge.domain.discovery import DiscoveryResult
from forge.domain.messages import STREAMS, Job, JobType
from forge.domain.status import Status
from forge.errors import ConfigError, ConfigIssue
from forge.jobs.dispatch import Dispatcher, stored_result
from forge.ports.fakes import MemoryBus, MemoryStore
from forge.settings import WorkerSettings
from forge.workflows.workers.runtime import Worker

from .support import DictObjects, Observed, Running, discovery, pending_run, running

Behaviour = Callable[[Job], Awaitable[None]]


@dataclass
class DiscoveryWorker:
    """The handler of a discovery worker: stores the scripted discovery; ``before`` runs first."""

    objects: DictObjects
    found: DiscoveryResult = field(default_factory=discovery)
    before: Behaviour | None = None
    jobs: list[Job] = field(default_factory=list)

    async def __call__(self, job: Job) -> dict[str, Any]:
        self.jobs.append(job)
        if self.before is not None:
            await self.before(job)
        key = f"pipeline-runs/{job.run_id}/discovery.json"
        await self.objects.put(key, self.found.model_dump_json().encode(), content_type="application/json")
        return {"object_key": key, "projects": len(self.found.projects), "affected": len(self.found.affected)}


@dataclass
class Setup:
    store: MemoryStore
    bus: MemoryBus
    objects: DictObjects
    handler: DiscoveryWorker
    reconciler: Observed


@contextlib.asynccontextmanager
async def controller(*, timeout: float = 10.0, worker: bool = True) -> AsyncIterator[tuple[Setup, Running]]:
    """The discovery reconciler on its loop and (unless ``worker=False``) one discovery worker."""
    store = MemoryStore()
    bus = MemoryBus()  # the controller's connection; the worker gets its own
    await bus.ensure_streams(STREAMS)
    objects = DictObjects()
    handler = DiscoveryWorker(objects)
    async with Dispatcher(bus, recheck=0.05) as dispatcher:
        reconciler = Observed(
            DiscoveryReconciler(runs=store, repositories=store, dispatcher=dispatcher, objects=objects, timeout=timeout)
        )
        services = [ReconcileLoop(reconciler, poll_interval=0.005, backoff_max=0.01).run]
        if worker:
            settings = WorkerSettings(concurrency=2, ack_wait=30.0, heartbeat=5.0, max_deliver=3, fetch_wait=0.02)
            services.append(Worker(JobType.DISCOVERY, handler, bus.connect(), objects, settings).run)
        async with running(*services) as loop:
            yield Setup(store, bus, objects, handler, reconciler), loop


async def test_a_discovery_is_recorded_on_its_run() -> None:
    async with controller() as (s, loop):
        run = await pending_run(s.store)

        async def discovered() -> bool:
            return (await s.store.get_run(run.id)).discovery_status is Status.SUCCESS

        await loop.until(discovered)
    done = await s.store.get_run(run.id)
    assert done.discovery == discovery()  # typed, as the worker stored it
    assert done.discovery_key == f"pipeline-runs/{run.id}/discovery.json"
    assert (done.status, done.error, done.error_code) == (Status.RUNNING, None, None)  # execution is next
    [job] = s.handler.jobs
    assert (job.key, job.type, job.run_id) == (f"discovery.{run.id}", JobType.DISCOVERY, run.id)
    assert (job.commit_sha, job.repository) == (run.commit_sha, run.repository)
    assert s.objects.reads == [done.discovery_key]  # read once
    assert s.reconciler.failed == []


async def test_an_invalid_configuration_fails_the_run_with_every_reason() -> None:
    issues = [ConfigIssue(".forge/project.yaml", 3, "steps[0].timeout", "must be positive")]

    async def invalid(job: Job) -> None:
        raise ConfigError(issues)

    async with controller() as (s, loop):
        s.handler.before = invalid
        run = await pending_run(s.store)

        async def failed() -> bool:
            return (await s.store.get_run(run.id)).status.is_final

        await loop.until(failed)
    done = await s.store.get_run(run.id)
    assert (done.status, done.discovery_status, done.error_code) == (Status.FAILED, Status.FAILED, "invalid_config")
    assert done.error == ConfigError(issues).message
    assert ".forge/project.yaml:3: steps[0].timeout: must be positive" in (done.error or "")
    assert done.discovery is None
    assert len(s.handler.jobs) == 1  # a permanent failure is not retried


async def test_the_store_down_when_the_result_arrives_delays_the_discovery_but_never_fails_it() -> None:
    async with controller() as (s, loop):

        async def store_goes_down(job: Job) -> None:
            s.store.available = False  # PostgreSQL goes away while the worker runs

        s.handler.before = store_goes_down
        run = await pending_run(s.store)
        await loop.until(lambda: len(s.reconciler.transient) >= 5)  # recording it is retried meanwhile

        async def result_stored() -> bool:  # the worker stored its result (beside its claim of the job)
            return bool(s.handler.jobs) and await stored_result(s.bus, s.handler.jobs[0].key) is not None

        await loop.until(result_stored)
        s.store.available = True

        async def discovered() -> bool:
            return (await s.store.get_run(run.id)).discovery_status is Status.SUCCESS

        await loop.until(discovered)
    done = await s.store.get_run(run.id)
    assert (done.status, done.error, done.error_code) == (Status.RUNNING, None, None)
    assert done.discovery == discovery()
    assert len(s.handler.jobs) == 1  # retries waited for the stored result: the job ran once
    assert s.reconciler.failed == []


@pytest.mark.parametrize("late", ["success", "invalid_config"])
async def test_a_run_cancelled_during_its_discovery_is_not_failed_by_a_late_result(late: str) -> None:
    release = asyncio.Event()

    async def slow(job: Job) -> None:
        await release.wait()
        if late == "invalid_config":
            raise ConfigError([ConfigIssue(".forge/project.yaml", 1, "name", "required")])

    async with controller() as (s, loop):
        s.handler.before = slow
        run = await pending_run(s.store)
        await loop.until(lambda: len(s.handler.jobs) == 1)
        # the execution reconciler handles the cancel request of a run still discovering
        await s.store.finish_run(run.id, Status.CANCELLED, error="cancelled by request", code="cancelled")
        release.set()
        await loop.until(lambda: run.id in s.reconciler.returned or run.id in dict(s.reconciler.failed))
    done = await s.store.get_run(run.id)
    assert (done.status, done.error, done.error_code) == (Status.CANCELLED, "cancelled by request", "cancelled")
    assert (done.discovery_status, done.discovery) == (Status.CANCELLED, None)


async def test_a_discovery_no_worker_finishes_in_time_fails_the_run_as_a_timeout() -> None:
    async with controller(timeout=0.1, worker=False) as (s, loop):
        run = await pending_run(s.store)

        async def failed() -> bool:
            return (await s.store.get_run(run.id)).status.is_final

        await loop.until(failed)
    done = await s.store.get_run(run.id)
    assert (done.status, done.discovery_status, done.error_code) == (Status.FAILED, Status.FAILED, "timeout")
    assert "discovery did not finish within" in (done.error or "")

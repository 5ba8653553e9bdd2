"""A worker's /metrics and spans: a job dispatched and handled moves the job series, and the worker's
span is the child of the dispatcher's in the run's trace (traceparent in the job's headers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from forge.domain.messages import STREAMS, DiscoveryPayload, Job, JobType
from forge.embedded.process import free_port
from forge.errors import PermanentError
from forge.jobs.dispatch import Dispatcher, dispatch
from forge.observability.exposition import metrics_endpoint
from forge.observability.tracing import root_span_id
from forge.ports import ObjectStore
from forge.ports.fakes import MemoryBus, MemoryServer
from forge.settings import WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.workers.runtime import Worker

from .support import sample, until, value

FAST = WorkerSettings(concurrency=2, ack_wait=5.0, heartbeat=0.5, max_deliver=2, fetch_wait=0.05)


async def _handler(job: Job) -> dict[str, Any]:
    assert isinstance(job.payload, DiscoveryPayload)
    if job.payload.branch == "fail":
        raise PermanentError("no such commit")
    return {"projects": 0}


@pytest.fixture
async def buses() -> AsyncIterator[tuple[MemoryBus, MemoryBus]]:
    """The worker's connection and the dispatcher's, on one server, with a worker running."""
    server = MemoryServer()
    worker_bus, dispatcher_bus = server.connect(), server.connect()
    await worker_bus.ensure_streams(STREAMS)
    worker = Worker(
        job_type=JobType.DISCOVERY,
        handler=_handler,
        bus=worker_bus,
        objects=cast(ObjectStore, object()),  # results are small: nothing is stored
        settings=FAST,
    )
    await worker.prepare()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        yield worker_bus, dispatcher_bus
        stop.set()


async def test_jobs_move_the_worker_series_seen_on_its_metrics_endpoint(buses: tuple[MemoryBus, MemoryBus]) -> None:
    _, bus = buses
    with metrics_endpoint("127.0.0.1", free_port()) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            before = (await scraper.get("/metrics")).text
            async with Dispatcher(bus) as dispatcher:
                assert (await dispatcher.dispatch(discovery_job(), timeout=10)).success
                assert not (await dispatcher.dispatch(discovery_job(branch="fail"), timeout=10)).success
            assert (await dispatch(bus, discovery_job(), timeout=10)).success
            # a worker acks (and counts) a job just after it replied
            await until(lambda: value("forge_worker_jobs_in_flight", type="discovery") == 0)
            after = (await scraper.get("/metrics")).text

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("forge_worker_jobs_started_total", type="discovery") == 3
    assert moved("forge_worker_jobs_finished_total", type="discovery", outcome="success") == 2
    assert moved("forge_worker_jobs_finished_total", type="discovery", outcome="failed") == 1
    assert moved("forge_worker_job_duration_seconds_count", type="discovery", outcome="success") == 2
    assert moved("forge_dispatch_duration_seconds_count", type="discovery") == 3
    assert sample(after, "forge_worker_jobs_in_flight", type="discovery") == 0


async def test_no_port_serves_nothing() -> None:
    with metrics_endpoint("127.0.0.1", 0) as port:
        assert port is None


async def test_the_job_span_is_the_child_of_the_dispatch_span_in_the_runs_trace(
    buses: tuple[MemoryBus, MemoryBus], spans: InMemorySpanExporter
) -> None:
    _, bus = buses
    job = discovery_job()
    async with Dispatcher(bus) as dispatcher:
        assert (await dispatcher.dispatch(job, timeout=10)).success
    await until(lambda: any(s.name == "job discovery" for s in spans.get_finished_spans()))
    finished = {s.name: s for s in spans.get_finished_spans()}
    sent, handled = finished["dispatch discovery"], finished["job discovery"]
    assert sent.context is not None
    assert handled.context is not None
    assert sent.context.trace_id == handled.context.trace_id == job.run_id.int
    assert sent.parent is not None
    assert sent.parent.span_id == root_span_id(job.run_id)
    assert handled.parent is not None
    assert handled.parent.span_id == sent.context.span_id
    assert sent.kind is SpanKind.PRODUCER
    assert handled.kind is SpanKind.CONSUMER

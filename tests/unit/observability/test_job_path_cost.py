"""What the job path pays for observability: with tracing off no span is made, no parent is looked up
and no ``traceparent`` travels with a job, while the metrics still count every job; with tracing on the
job carries the dispatch span's context (docs/performance.md, "Dispatch overhead")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from uuid import uuid4

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from forge.domain.messages import STREAMS, Job, JobType
from forge.jobs.dispatch import Dispatcher
from forge.observability import tracing
from forge.ports import MessageBus, ObjectStore
from forge.ports.fakes import MemoryBus, MemoryServer
from forge.settings import WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.workers.runtime import Worker

from .support import until, value

FAST = WorkerSettings(concurrency=2, ack_wait=5.0, heartbeat=0.5, max_deliver=2, fetch_wait=0.05)


class _Recording:
    """The dispatcher's bus, remembering the headers of every job it publishes."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self.sent: list[dict[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> bool:
        if subject.startswith("pipeline.discovery."):
            self.sent.append(dict(headers or {}))
        return await self._bus.publish(subject, data, msg_id=msg_id, headers=headers)


async def _handler(job: Job) -> dict[str, Any]:
    return {}


@pytest.fixture
async def recording() -> AsyncIterator[_Recording]:
    server = MemoryServer()
    worker_bus = server.connect()
    await worker_bus.ensure_streams(STREAMS)
    worker = Worker(
        job_type=JobType.DISCOVERY,
        handler=_handler,
        bus=worker_bus,
        objects=cast(ObjectStore, object()),
        settings=FAST,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        yield _Recording(server.connect())
        stop.set()


async def test_with_tracing_off_a_job_carries_no_trace_context_and_is_still_counted(
    recording: _Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_enabled", False)

    def no_parent(*args: object, **kwargs: object) -> None:
        raise AssertionError("a parent was looked up with tracing off")

    monkeypatch.setattr(tracing, "parent_for", no_parent)
    dispatched = value("forge_dispatch_duration_seconds_count", type="discovery")
    finished = value("forge_worker_jobs_finished_total", type="discovery", outcome="success")
    async with Dispatcher(cast(MessageBus, recording)) as dispatcher:
        assert (await dispatcher.dispatch(discovery_job(), timeout=10)).success
    assert len(recording.sent) == 1
    assert set(recording.sent[0]) == {"Forge-Reply-To"}
    assert value("forge_dispatch_duration_seconds_count", type="discovery") == dispatched + 1
    await until(lambda: value("forge_worker_jobs_finished_total", type="discovery", outcome="success") == finished + 1)


async def test_with_tracing_on_a_job_carries_its_dispatch_spans_context(
    recording: _Recording, spans: InMemorySpanExporter
) -> None:
    job = discovery_job()
    async with Dispatcher(cast(MessageBus, recording)) as dispatcher:
        assert (await dispatcher.dispatch(job, timeout=10)).success
    traceparent = recording.sent[0]["traceparent"]
    sent = next(s for s in spans.get_finished_spans() if s.name == "dispatch discovery")
    assert sent.context is not None
    assert traceparent == f"00-{job.run_id.hex}-{sent.context.span_id:016x}-01"


def test_off_a_span_is_one_shared_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, a span costs no object: every call returns the same context manager, and nothing is current."""
    monkeypatch.setattr(tracing, "_enabled", False)
    kind = SpanKind.CONSUMER
    span = tracing.run_span("a", uuid4(), kind=kind)
    assert span is tracing.run_span("b", uuid4(), kind=kind, headers={"traceparent": "garbage"})
    with span:
        assert not trace.get_current_span().get_span_context().is_valid

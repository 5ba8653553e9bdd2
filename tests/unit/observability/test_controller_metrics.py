"""The controller's series: reconcile durations and errors by kind, run transitions, step events applied,
and the sampled gauges (JetStream lag, DLQ depth, runs in progress)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from forge.controller.reconcile import ReconcileLoop
from forge.controller.step_events import EVENTS_CONSUMER, StepEventRecorder
from forge.domain.events import EVENTS_STREAM, StepEvent
from forge.domain.messages import STREAMS
from forge.domain.status import Status
from forge.errors import ForgeError, PermanentError, TransientError
from forge.jobs.events import StepEventPublisher
from forge.observability.breakers import record_breaker_state
from forge.observability.runs import observed_runs
from forge.observability.sampler import sample_once
from forge.ports.fakes import MemoryServer, MemoryStore
from forge.ports.store import NewRepository, NewRun
from forge.testing.discoveries import lib_and_app

from .support import value


@dataclass
class _Flaky:
    """Fails its first reconcile with ``first`` then succeeds; records failures."""

    first: Exception
    name: str = "flaky"
    calls: int = 0
    failed: list[UUID] = field(default_factory=list)

    async def resume(self) -> Sequence[UUID]:
        return []

    async def claim(self) -> Sequence[UUID]:
        return []

    async def interrupts(self) -> Sequence[UUID]:
        return []

    async def reconcile(self, run_id: UUID) -> None:
        self.calls += 1
        if self.calls == 1:
            raise self.first

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        self.failed.append(run_id)


async def test_reconcile_errors_are_counted_by_kind_and_every_call_is_timed(spans: InMemorySpanExporter) -> None:
    before = {
        kind: value("forge_controller_reconcile_errors_total", reconciler="flaky", kind=kind)
        for kind in ("transient", "permanent", "internal")
    }
    calls = value("forge_controller_reconcile_duration_seconds_count", reconciler="flaky")
    run = uuid4()
    await ReconcileLoop(_Flaky(TransientError("NATS is down")), backoff_max=0.01).drive(run)
    permanent = _Flaky(PermanentError("bad config"))
    await ReconcileLoop(permanent).drive(run)
    await ReconcileLoop(_Flaky(RuntimeError("bug"))).drive(run)
    after = {kind: value("forge_controller_reconcile_errors_total", reconciler="flaky", kind=kind) for kind in before}
    assert {kind: after[kind] - before[kind] for kind in before} == {"transient": 1, "permanent": 1, "internal": 1}
    assert value("forge_controller_reconcile_duration_seconds_count", reconciler="flaky") - calls == 4
    assert permanent.failed == [run]
    traced = [s for s in spans.get_finished_spans() if s.name == "reconcile flaky"]
    assert len(traced) == 4
    assert all(s.context is not None and s.context.trace_id == run.int for s in traced)


async def test_run_transitions_are_counted() -> None:
    store = MemoryStore()
    runs = observed_runs(store)
    await store.register_repository(NewRepository("acme/mono", "https://git.example.com/acme/mono.git"))
    before = {s: value("forge_run_transitions_total", status=s) for s in ("running", "cancelled")}
    created = value("forge_runs_created_total", trigger="manual")
    run, _ = await runs.create_run(NewRun(repository="acme/mono", commit_sha="ef" * 20, branch="main"))
    assert [r.id for r in await runs.claim_discovery(limit=5)] == [run.id]
    await runs.finish_run(run.id, Status.CANCELLED)
    assert value("forge_runs_created_total", trigger="manual") - created == 1
    assert value("forge_run_transitions_total", status="running") - before["running"] == 1
    assert value("forge_run_transitions_total", status="cancelled") - before["cancelled"] == 1
    assert (await runs.get_run(run.id)).status is Status.CANCELLED  # everything else reaches the store


async def test_the_sampler_reads_lag_dlq_depth_and_runs_in_progress() -> None:
    bus = MemoryServer().connect()
    await bus.ensure_streams(STREAMS)
    for n in range(3):
        await bus.publish(f"pipeline.tasks.run.{n}", b"{}")
    await bus.publish("pipeline.dlq.ci", b"{}")
    store = MemoryStore()
    await store.register_repository(NewRepository("acme/mono", "https://git.example.com/acme/mono.git"))
    await store.create_run(NewRun(repository="acme/mono", commit_sha="12" * 20, branch="main"))
    await store.claim_discovery(limit=5)
    await sample_once(bus, store)
    assert value("forge_jetstream_pending_messages", stream="pipeline-tasks") == 3
    assert value("forge_jetstream_pending_messages", stream="pipeline-discovery") == 0
    assert value("forge_dlq_messages") == 1
    assert value("forge_runs_active", stage="discovery") == 1
    assert value("forge_run_oldest_active_seconds") >= 0


async def test_step_events_applied_are_counted_by_kind() -> None:
    store, bus = MemoryStore(), MemoryServer().connect()
    await bus.ensure_streams(STREAMS)
    await store.register_repository(NewRepository("acme/mono", "https://git.example.com/acme/mono.git"))
    run, _ = await store.create_run(NewRun(repository="acme/mono", commit_sha="34" * 20, branch="main"))
    await store.claim_discovery(limit=5)
    found = lib_and_app("34" * 20, "acme/mono")
    await store.record_discovery(run.id, found, "d.json")
    executions = await store.create_executions(run.id, found)
    step = next(iter(executions.step_ids().values()))
    recorder = StepEventRecorder(executions=store, bus=bus, fetch_wait=0.02)
    await recorder.prepare()
    publisher = StepEventPublisher(bus)
    for kind in ("started", "success"):
        await publisher.publish(StepEvent(run_id=run.id, step_id=step, attempt=1, kind=kind))
    before = {k: value("forge_controller_step_events_applied_total", kind=k) for k in ("started", "success")}
    await recorder.record(await bus.fetch(EVENTS_STREAM, EVENTS_CONSUMER, batch=10, timeout=1))
    assert {k: value("forge_controller_step_events_applied_total", kind=k) - before[k] for k in before} == {
        "started": 1,
        "success": 1,
    }


def test_a_breaker_state_is_a_gauge() -> None:
    record_breaker_state("github", "open")
    assert value("forge_circuit_breaker_state", breaker="github") == 2
    record_breaker_state("github", "half-open")
    record_breaker_state("github", "closed")
    assert value("forge_circuit_breaker_state", breaker="github") == 0
    assert value("forge_circuit_breaker_transitions_total", breaker="github", state="open") >= 1

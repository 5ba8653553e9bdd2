"""ExecutionReconciler on ReconcileLoop, with a real StepEventRecorder, on MemoryStore + MemoryBus + MemoryEngine.

Workflows never run anything: how each ends is scripted on the engine (``WorkflowOutcome``), and
what a CI worker would report is published here as ``StepEvent``s with ``StepEventPublisher``.
The discovery: ``lib`` (check/lint, test/unit) and ``app`` on it (build/bundle, test/unit).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.execution import ExecutionReconciler, TemplateOptions
from forge.controller.step_events import StepEventRecorder
from forge.domain.entities import PipelineRun
from forge.domain.events import StepEvent
from forge.domain.messages import CANCEL_SUBJECTS, STREAMS
from forge.domain.status import Status
from forge.jobs.events import StepEventPublisher
from forge.ports import WorkflowPhase
from forge.ports.fakes import MemoryBus, MemoryEngine
from forge.ports.fakes.memory_engine import EXIT_1, WorkflowOutcome
from forge.ports.store import NewRepository

from .support import (
    CLONE_URL,
    REPO,
    STEPS,
    Observed,
    ObservedStore,
    Running,
    discovered_run,
    discovery,
    running,
    steps_of,
)

NAMESPACE = "forge"
RUN_LABEL = "forge.projectcatalyst.io/run-id"
HOLD = WorkflowOutcome(hold=True)


class BarrierRecorder(StepEventRecorder):
    """The real recorder; counts how often the reconciler waited at its barrier."""

    barriers = 0

    async def caught_up(self, *, poll: float = 0.002) -> None:
        self.barriers += 1
        await super().caught_up(poll=poll)


@dataclass
class Setup:
    store: ObservedStore
    bus: MemoryBus
    engine: MemoryEngine
    recorder: BarrierRecorder
    reconciler: Observed

    def template(self, run: PipelineRun) -> str:
        return f"forge-run-{run.id}"

    async def run(self, run_id: UUID) -> PipelineRun:
        return await self.store.get_run(run_id)

    async def workflow_of(self, run_id: UUID) -> str:
        """The run's workflow, once it is recorded."""
        workflow = (await self.run(run_id)).workflow_name
        assert workflow is not None
        return workflow


@contextlib.asynccontextmanager
async def controller(engine: MemoryEngine | None = None) -> AsyncIterator[tuple[Setup, Running]]:
    store = ObservedStore()
    bus = MemoryBus()
    await bus.ensure_streams(STREAMS)
    engine = engine or MemoryEngine(namespace=NAMESPACE)
    recorder = BarrierRecorder(executions=store, bus=bus, fetch_wait=0.02)
    reconciler = Observed(
        ExecutionReconciler(
            runs=store,
            repositories=store,
            executions=store,
            bus=bus,
            engine=engine,
            recorder=recorder,
            options=TemplateOptions(image="img", namespace=NAMESPACE, parallelism=10),
        )
    )
    loop = ReconcileLoop(reconciler, poll_interval=0.005, backoff_max=0.01)
    async with running(recorder.run, loop.run) as services:
        yield Setup(store, bus, engine, recorder, reconciler), services


async def finished(s: Setup, loop: Running, run_id: UUID) -> PipelineRun:
    async def final() -> bool:
        return (await s.run(run_id)).status.is_final

    await loop.until(final)
    return await s.run(run_id)


async def submitted(s: Setup, loop: Running, run_id: UUID, count: int = 1) -> str:
    """The run's workflow once ``count`` workflows were submitted and the latest is recorded."""

    async def recorded() -> bool:
        current = await s.run(run_id)
        return len(s.engine.submissions) >= count and current.workflow_name == s.engine.submissions[-1].name

    await loop.until(recorded)
    return await s.workflow_of(run_id)


async def followed(s: Setup, loop: Running, workflow: str) -> None:
    """Until the reconciler has read the workflow (it waits on it now)."""
    await loop.until(lambda: ("watch", workflow) in s.engine.calls)


async def test_a_discovered_run_gets_its_template_and_workflow_and_succeeds() -> None:
    async with controller() as (s, loop):
        run = await discovered_run(s.store)
        done = await finished(s, loop, run.id)
    assert (done.status, done.error, done.error_code) == (Status.SUCCESS, None, None)
    name = s.template(run)
    assert list(s.engine.templates) == [name]
    [submission] = s.engine.submissions
    assert submission.template == name
    assert submission.labels[RUN_LABEL] == str(run.id)
    assert done.workflow_name == submission.name
    assert s.recorder.barriers == 1
    # nobody reported a step: finish_run sweeps them all to skipped
    assert await steps_of(s.store, run.id) == dict.fromkeys(STEPS, (Status.SKIPPED, None))


async def test_step_events_published_just_before_the_workflow_ends_are_recorded_before_the_run_ends() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        workflow = await submitted(s, loop, run.id)
        await followed(s, loop, workflow)

        executions = await s.store.get_executions(run.id)
        s.store.gate.clear()  # PostgreSQL is slow to take the events: the recorder waits on it
        try:
            publisher = StepEventPublisher(s.bus)
            for step in executions.steps:  # what CI workers report, just before the workflow ends
                await publisher.publish(StepEvent(run_id=run.id, step_id=step.id, attempt=1, kind="started"))
                await publisher.publish(
                    StepEvent(run_id=run.id, step_id=step.id, attempt=1, kind="success", exit_code=0)
                )
            engine.release(workflow)
            await loop.until(lambda: s.recorder.barriers == 1)  # the workflow ended; the reconciler waits
            await loop.until(lambda: s.store.apply_calls >= 1)  # the recorder holds the batch
            assert (await s.run(run.id)).status is Status.RUNNING  # not settled before the events are in
        finally:
            s.store.gate.set()
        done = await finished(s, loop, run.id)
    assert (done.status, done.error, done.error_code) == (Status.SUCCESS, None, None)
    assert await steps_of(s.store, run.id) == dict.fromkeys(STEPS, (Status.SUCCESS, None))
    assert sum(len(batch) for batch in s.store.applied) == 2 * len(STEPS)


async def test_a_failed_node_nobody_reported_fails_its_step_and_the_run() -> None:
    engine = MemoryEngine(namespace=NAMESPACE, default=WorkflowOutcome.failing("check-lib-lint"))
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        done = await finished(s, loop, run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "workflow_failed")
    assert done.workflow_name is not None
    final = await engine.status(done.workflow_name)
    assert final.phase is WorkflowPhase.FAILED
    assert done.error == final.message
    assert await steps_of(s.store, run.id) == {
        "check/lib/lint": (Status.FAILED, EXIT_1),  # the node's message
        "build/app/bundle": (Status.SKIPPED, None),  # the engine says it ran, but no worker reported it
        "test/lib/unit": (Status.SKIPPED, None),
        "test/app/unit": (Status.SKIPPED, None),
    }


async def test_an_unavailable_engine_is_waited_out_and_submits_once() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    engine.unavailable(4)  # create_template and submit answer 503 for a while
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        done = await finished(s, loop, run.id)
    assert done.status is Status.SUCCESS
    assert len(s.reconciler.transient) == 4
    assert len(engine.submissions) == 1


async def test_an_engine_unavailable_while_followed_is_waited_out() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        workflow = await submitted(s, loop, run.id)
        await followed(s, loop, workflow)
        engine.unavailable(3)
        engine.release(workflow)
        done = await finished(s, loop, run.id)
    assert (done.status, done.workflow_name) == (Status.SUCCESS, workflow)
    assert len(s.reconciler.transient) == 3
    assert len(engine.submissions) == 1


async def test_the_store_down_while_a_workflow_is_followed_delays_the_run_but_never_fails_it() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        workflow = await submitted(s, loop, run.id)
        await followed(s, loop, workflow)
        s.store.available = False
        engine.release(workflow)
        await loop.until(lambda: len(s.reconciler.transient) >= 5)
        s.store.available = True
        done = await finished(s, loop, run.id)
    assert (done.status, done.error, done.workflow_name) == (Status.SUCCESS, None, workflow)
    assert len(engine.submissions) == 1


class _StoreDownAfterSubmit(MemoryEngine):
    """The engine takes the workflow; PostgreSQL goes away before the controller records it."""

    store: ObservedStore | None = None

    async def submit(self, template_name: str, *, parameters: Any, labels: Any) -> str:
        name = await super().submit(template_name, parameters=parameters, labels=labels)
        assert self.store is not None
        self.store.available = False
        return name


async def test_the_store_down_right_after_submit_never_submits_a_second_workflow() -> None:
    engine = _StoreDownAfterSubmit(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        engine.store = s.store
        run = await discovered_run(s.store)
        await loop.until(lambda: s.store.renew_calls >= 5)  # recording it (its claim checked first) is retried
        s.store.available = True
        done = await finished(s, loop, run.id)
    assert done.status is Status.SUCCESS
    [submission] = engine.submissions
    assert done.workflow_name == submission.name
    assert s.reconciler.transient == []  # retried in place: the reconcile (and its submit) never started over


async def test_a_lost_workflow_is_resubmitted_once() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        first = await submitted(s, loop, run.id)
        await followed(s, loop, first)
        engine.lose(first)  # the local engine forgets it (a controller restart)
        second = await submitted(s, loop, run.id, count=2)
        assert second != first
        engine.release(second)
        done = await finished(s, loop, run.id)
    assert (done.status, done.workflow_name) == (Status.SUCCESS, second)
    assert [sub.template for sub in engine.submissions] == [s.template(run)] * 2  # the same template


async def test_a_workflow_lost_twice_fails_the_run() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        first = await submitted(s, loop, run.id)
        await followed(s, loop, first)
        engine.lose(first)
        second = await submitted(s, loop, run.id, count=2)
        await followed(s, loop, second)
        engine.lose(second)
        done = await finished(s, loop, run.id)
    assert (done.status, done.error_code) == (Status.FAILED, "workflow_lost")
    assert second in (done.error or "")
    assert len(engine.submissions) == 2
    assert await steps_of(s.store, run.id) == dict.fromkeys(STEPS, (Status.SKIPPED, None))


async def test_a_cancel_request_stops_the_workflow_and_tells_the_workers() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop), s.bus.subscribe(CANCEL_SUBJECTS) as cancels:
        run = await discovered_run(s.store)
        engine.script(s.template(run), HOLD)
        workflow = await submitted(s, loop, run.id)
        await followed(s, loop, workflow)
        await s.store.request_cancel(run.id)
        done = await finished(s, loop, run.id)
        assert await cancels.next(timeout=5) == str(run.id).encode()
    assert (done.status, done.error, done.error_code) == (Status.CANCELLED, "cancelled by request", "cancelled")
    assert ("stop", workflow) in engine.calls
    stopped = await engine.status(workflow)
    assert (stopped.phase, stopped.message) == (WorkflowPhase.FAILED, "cancelled by request")
    assert await s.bus.last_payload("pipeline-cancels", f"pipeline.cancel.{run.id}") == str(run.id).encode()
    assert await steps_of(s.store, run.id) == dict.fromkeys(STEPS, (Status.SKIPPED, None))
    assert len(engine.submissions) == 1
    assert s.reconciler.failed == []


async def test_a_run_with_nothing_affected_succeeds_without_a_workflow() -> None:
    engine = MemoryEngine(namespace=NAMESPACE)
    async with controller(engine) as (s, loop):
        run = await discovered_run(s.store, discovery(affected=False))
        done = await finished(s, loop, run.id)
    assert (done.status, done.error, done.workflow_name) == (Status.SUCCESS, None, None)
    assert engine.calls == []
    assert (await s.store.get_executions(run.id)).steps == []


async def test_the_template_carries_the_repository_s_secret_grant_to_its_steps() -> None:
    found = discovery()
    project = found.projects[0]
    step = project.steps[0].model_copy(update={"secrets": ["NPM_TOKEN", "NOT_GRANTED"]})
    project = project.model_copy(update={"steps": [step, *project.steps[1:]]})
    found = found.model_copy(update={"projects": [project, *found.projects[1:]]})
    async with controller() as (s, loop):
        await s.store.register_repository(NewRepository(REPO, CLONE_URL, secrets=("NPM_TOKEN", "OTHER")))
        run = await discovered_run(s.store, found)
        await submitted(s, loop, run.id)
    payloads = [
        json.loads(p["value"])
        for t in s.engine.templates[s.template(run)]["spec"]["templates"]
        for task in (t.get("dag") or {}).get("tasks", [])
        for p in task.get("arguments", {}).get("parameters", [])
        if p["name"] == "payload"
    ]
    named = [p for p in payloads if p["secrets"]]
    assert [(p["secrets"], p["granted_secrets"]) for p in named] == [(["NPM_TOKEN", "NOT_GRANTED"], ["NPM_TOKEN"])]
    assert all("granted_secrets" not in p for p in payloads if not p["secrets"])

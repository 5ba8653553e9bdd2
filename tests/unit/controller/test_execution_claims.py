"""Claim leases in the ExecutionReconciler: two controllers on one memory store whose clock the test moves.

A run claimed by a controller that died before recording its workflow is executed by another once the
lease has passed on the store's clock; one claimed by a controller that stopped cleanly (its reconcile loop
stopped, or cancelled) is handed back and executed by another at once; a controller whose claim was taken
over (it stalled past its lease) records nothing for the run, fails nothing, and stops the workflow it had
submitted. The lease is long (renewals every 100 s never come within a test): the store's clock alone says
when it has passed. Each controller has its own store connection; a dying one loses it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.execution import ExecutionReconciler, TemplateOptions
from forge.controller.step_events import StepEventRecorder
from forge.domain.messages import STREAMS
from forge.domain.status import Status
from forge.errors import InvalidInputError
from forge.ports import WorkflowPhase
from forge.ports.fakes import MemoryBus, MemoryEngine, MemoryStore
from forge.ports.fakes.memory_engine import WorkflowOutcome

from .support import discovered_run, until

NAMESPACE = "forge"
LEASE = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class StallingEngine(MemoryEngine):
    """Controller A's engine: ``stall`` (``create_template`` or ``submit``) waits for ``go`` and then, with
    ``refuse``, fails for good; ``submit`` stalls after the workflow was created."""

    def __init__(self, stall: str, *, refuse: bool = False) -> None:
        super().__init__(namespace=NAMESPACE, default=WorkflowOutcome(hold=True))
        self.stall = stall
        self.refuse = refuse
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def create_template(self, template: Mapping[str, Any]) -> str:
        if self.stall == "create_template":
            await self._stall()
        return await super().create_template(template)

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        name = await super().submit(template_name, parameters=parameters, labels=labels)
        if self.stall == "submit":
            await self._stall()
        return name

    async def _stall(self) -> None:
        self.entered.set()
        await self.go.wait()
        if self.refuse:
            raise InvalidInputError("the engine refuses the template")


class Two:
    """One store and bus; each controller its own engine and claimer."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(clock=self.clock)
        self.bus = MemoryBus()

    def controller(self, engine: MemoryEngine) -> ExecutionReconciler:
        store = self.store.connect()
        return ExecutionReconciler(
            runs=store,
            repositories=store,
            executions=store,
            bus=self.bus,
            engine=engine,
            recorder=StepEventRecorder(executions=store, bus=self.bus),
            options=TemplateOptions(image="img", namespace=NAMESPACE, parallelism=10),
            claim_lease=LEASE,
        )


@pytest.fixture
async def two() -> Two:
    setup = Two()
    await setup.bus.ensure_streams(STREAMS)
    return setup


async def test_a_run_whose_controller_died_before_its_workflow_is_executed_by_another_after_the_lease(
    two: Two,
) -> None:
    run = await discovered_run(two.store)
    a_engine = StallingEngine("create_template")
    a = two.controller(a_engine)
    assert await a.claim() == [run.id]
    dying = asyncio.create_task(a.reconcile(run.id))
    async with asyncio.timeout(10):
        await a_engine.entered.wait()
    assert isinstance(a.runs, MemoryStore)
    await a.runs.close()  # controller A dies before submitting: its connection goes first (it hands nothing back)
    dying.cancel()
    await asyncio.wait([dying])

    b_engine = MemoryEngine(namespace=NAMESPACE, default=WorkflowOutcome(hold=True))
    b = two.controller(b_engine)
    assert await b.claim() == []  # A's claim is within its lease
    two.clock.advance(LEASE * 1.5)
    assert await b.claim() == [run.id]
    following = asyncio.create_task(b.reconcile(run.id))
    try:

        async def recorded() -> bool:
            return (await two.store.get_run(run.id)).workflow_name is not None

        await until(recorded, task=following)
    finally:
        following.cancel()
    [submission] = b_engine.submissions
    assert (await two.store.get_run(run.id)).workflow_name == submission.name
    assert a_engine.submissions == []


@pytest.mark.parametrize("how", ["stopped", "cancelled"])
async def test_a_run_whose_controller_stopped_cleanly_is_executed_by_another_at_once(two: Two, how: str) -> None:
    run = await discovered_run(two.store)
    a_engine = StallingEngine("create_template")
    a = two.controller(a_engine)
    stop = asyncio.Event()
    loop = asyncio.create_task(ReconcileLoop(a).run(stop))  # A claims the run; building its workflow hangs
    async with asyncio.timeout(10):
        await a_engine.entered.wait()
        if how == "stopped":  # SIGTERM or leadership lost: the loop cancels its runs' tasks and returns
            stop.set()
            await loop
        else:  # cancelled as after the grace period
            loop.cancel()
            await asyncio.wait([loop])
            assert loop.cancelled()

    b_engine = MemoryEngine(namespace=NAMESPACE, default=WorkflowOutcome(hold=True))
    b = two.controller(b_engine)
    assert await b.claim() == [run.id]  # at once: the store's clock never moved
    following = asyncio.create_task(b.reconcile(run.id))
    try:

        async def recorded() -> bool:
            return (await two.store.get_run(run.id)).workflow_name is not None

        await until(recorded, task=following)
    finally:
        following.cancel()
    [submission] = b_engine.submissions
    assert (await two.store.get_run(run.id)).workflow_name == submission.name
    assert a_engine.submissions == []


@pytest.mark.parametrize(
    ("stall", "refuse"),
    [("submit", False), ("create_template", True)],
    ids=["after-submitting", "then-failing-for-good"],
)
async def test_a_controller_whose_run_claim_was_taken_over_writes_nothing(two: Two, stall: str, refuse: bool) -> None:
    run = await discovered_run(two.store)
    a_engine = StallingEngine(stall, refuse=refuse)
    a = two.controller(a_engine)
    assert await a.claim() == [run.id]
    stalled = asyncio.create_task(a.reconcile(run.id))
    async with asyncio.timeout(10):
        await a_engine.entered.wait()  # A stalls past its lease

    two.clock.advance(LEASE * 1.5)
    b_engine = MemoryEngine(namespace=NAMESPACE, default=WorkflowOutcome(hold=True))
    b = two.controller(b_engine)
    assert await b.claim() == [run.id]
    following = asyncio.create_task(b.reconcile(run.id))
    try:

        async def recorded() -> bool:
            return (await two.store.get_run(run.id)).workflow_name is not None

        await until(recorded, task=following)
        a_engine.go.set()
        async with asyncio.timeout(10):
            await stalled  # returns: no error for the loop to fail the run with
    finally:
        following.cancel()
    [b_workflow] = b_engine.submissions
    current = await two.store.get_run(run.id)
    assert (current.status, current.workflow_name, current.error) == (Status.RUNNING, b_workflow.name, None)
    if stall == "submit":  # the workflow A had submitted is stopped, not recorded
        [a_workflow] = a_engine.submissions
        assert ("stop", a_workflow.name) in a_engine.calls
        assert (await a_engine.status(a_workflow.name)).phase is WorkflowPhase.FAILED
    else:
        assert a_engine.submissions == []

"""Fixtures for the workflow engine tests; test_argo_engine.py defines its own ``engine``.

``engine_harness`` runs the WorkflowEngine compliance suite (test_engine_compliance.py) against
every engine in ``HARNESSES``. To add an engine, write an ``EngineHarness`` for it and list its
factory there: the tests only ever see ``WorkflowEngine`` plus the switches a harness provides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import pytest
from tests.integration.controller.support import FakeArgo, Outcome

from forge.adapters.argo_workflows import ArgoWorkflowEngine
from forge.ports.engine import WorkflowEngine
from forge.ports.fakes import MemoryEngine
from forge.ports.fakes.memory_engine import WorkflowOutcome
from forge.workflows.engine import LocalWorkflowEngine

#: The node message of a failing task, the same on every engine here: a container exiting with 3.
EXIT_3 = "Error (exit code 3)"


@pytest.fixture
async def engine() -> AsyncIterator[LocalWorkflowEngine]:
    async with LocalWorkflowEngine(kill_grace=2.0) as e:
        yield e


class EngineHarness(Protocol):
    """One engine under test, and how to make its tasks fail or hang.

    The compliance templates run every leaf task as the container ``forge-step <workflow name>
    <task> <value of the label 'team'>``; ``fail``/``hold`` apply to workflows submitted after
    them. What makes a task fail or hang differs per engine (an in-process step runner, the fake
    Argo Server's scripted outcome, a scripted ``MemoryEngine``); what the engine then reports
    is what the suite checks.
    """

    @property
    def engine(self) -> WorkflowEngine: ...

    def fail(self, task: str) -> None:
        """The leaf ``task`` ends with exit code 3."""

    def hold(self) -> None:
        """Every leaf task runs until the workflow is stopped."""

    def labels(self, workflow: str) -> Mapping[str, str]:
        """The labels the workflow carries (the local engine shows only 'team', to a task that ran)."""

    async def aclose(self) -> None: ...


class LocalHarness:
    """The local engine with an in-process step runner standing in for ``forge-step``."""

    def __init__(self) -> None:
        self.engine = LocalWorkflowEngine(step_runner=self._step, kill_grace=2.0)
        self._failing: set[str] = set()
        self._holding = False
        self._labels: dict[str, dict[str, str]] = {}

    async def _step(self, argv: list[str]) -> tuple[int, str, str]:
        workflow, task, team = argv
        self._labels[workflow] = {"team": team}
        if self._holding:
            await asyncio.Event().wait()  # until stop cancels it
        return (3, "", "scripted failure") if task in self._failing else (0, f"{task} done", "")

    def fail(self, task: str) -> None:
        self._failing.add(task)

    def hold(self) -> None:
        self._holding = True

    def labels(self, workflow: str) -> Mapping[str, str]:
        return self._labels.get(workflow, {})

    async def aclose(self) -> None:
        await self.engine.aclose()


class ArgoHarness:
    """``ArgoWorkflowEngine`` on the controller tests' fake Argo Server, which runs builder-shaped DAGs."""

    def __init__(self) -> None:
        self.argo = FakeArgo(namespace="forge")
        self.argo.start()
        self.engine = ArgoWorkflowEngine(self.argo.url, namespace="forge", poll_interval=0.02)

    def fail(self, task: str) -> None:
        self.argo.outcome = Outcome(fail=task)

    def hold(self) -> None:
        self.argo.outcome = Outcome(hold=True)

    def labels(self, workflow: str) -> Mapping[str, str]:
        with self.argo.lock:
            return dict(self.argo.workflows[workflow].labels)

    async def aclose(self) -> None:
        await self.engine.aclose()
        self.argo.close()


class MemoryHarness:
    def __init__(self) -> None:
        self.engine = MemoryEngine()

    def fail(self, task: str) -> None:
        self.engine.default = WorkflowOutcome.failing(task, message=EXIT_3)

    def hold(self) -> None:
        self.engine.default = WorkflowOutcome(hold=True)

    def labels(self, workflow: str) -> Mapping[str, str]:
        return self.engine.labels(workflow)

    async def aclose(self) -> None:
        pass


HARNESSES: dict[str, Callable[[], EngineHarness]] = {
    "argo": ArgoHarness,
    "local": LocalHarness,
    "memory": MemoryHarness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def engine_harness(request: pytest.FixtureRequest) -> AsyncIterator[EngineHarness]:
    harness = HARNESSES[request.param]()
    try:
        yield harness
    finally:
        await harness.aclose()

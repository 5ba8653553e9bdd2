"""One running Workflow of the local engine: Argo's DAG semantics over local containers.

- A task starts once every task its ``depends``/``dependencies`` names is fulfilled and the
  expression holds; when it does not hold the task is ``Omitted`` ("omitted: depends condition
  not met"), and so are its dependants through the bare-name meaning.
- ``failFast`` (default true): after a task fails, unless a dependant handles it (names
  ``task.Failed``/``task.Errored``) or it has ``continueOn``, no new task starts; running ones
  finish; the remaining ones become ``Omitted``; the workflow fails.
- The workflow phase is Argo's ``assessDAGPhase``: each leaf task's branch phase is its own
  phase if it ran, else (Skipped/Omitted) the worst of its dependencies' branch phases.
- Shutdown (``stop``, ``spec.activeDeadlineSeconds``): running containers are killed and their
  nodes fail with the message; tasks not started yet become ``Skipped``; the workflow fails.
- ``parallelism`` (workflow or dag template, the smaller) bounds containers running at once,
  and the engine's machine-wide ``max_parallel`` bounds them across workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase, NodeStatus, WorkflowPhase, WorkflowStatus
from forge.workflows.engine import expressions as ex
from forge.workflows.engine.containers import Outcome, StepRunner, run_attempt
from forge.workflows.engine.spec import TaskPlan, WorkflowPlan

__all__ = ["WORKFLOW_DEADLINE_MESSAGE", "DagRun"]

WORKFLOW_DEADLINE_MESSAGE = "Step exceeded its deadline"
_FULFILLED = {NodePhase.SUCCEEDED, NodePhase.FAILED, NodePhase.ERROR, NodePhase.SKIPPED, NodePhase.OMITTED}
_BAD = {NodePhase.FAILED, NodePhase.ERROR}
_log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Node:
    name: str
    phase: NodePhase = NodePhase.PENDING
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    outputs: dict[str, str] = field(default_factory=dict)

    def end(self, phase: NodePhase, message: str | None) -> None:
        self.phase, self.message, self.finished_at = phase, message, _now()


class DagRun:
    def __init__(
        self,
        name: str,
        plan: WorkflowPlan,
        scope: Mapping[str, str],
        *,
        step_runner: StepRunner | None,
        machine_slots: asyncio.Semaphore,
        kill_grace: float,
    ):
        self.name, self.plan, self._scope = name, plan, dict(scope)
        self._step_runner, self._machine_slots, self._kill_grace = step_runner, machine_slots, kill_grace
        self._slots = asyncio.Semaphore(plan.parallelism) if plan.parallelism else None
        self.phase = WorkflowPhase.PENDING
        self.message: str | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.nodes = {n: _Node(n) for n in plan.tasks}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._shutdown: str | None = None
        self._fail_fast_by: str | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self.done = asyncio.Event()

    # -- observation -------------------------------------------------------------------------
    def snapshot(self) -> WorkflowStatus:
        nodes = {
            n.name: NodeStatus(n.name, n.phase, n.message, n.started_at, n.finished_at, n.attempts, dict(n.outputs))
            for n in self.nodes.values()
        }
        return WorkflowStatus(self.name, self.phase, self.message, self.started_at, self.finished_at, nodes)

    async def changes(self) -> AsyncIterator[WorkflowStatus]:
        last: WorkflowStatus | None = None
        while True:
            changed = self._changed
            status = self.snapshot()
            if status != last:
                yield status
                last = status
            if status.phase.is_final:
                return
            await changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- control -----------------------------------------------------------------------------
    def shutdown(self, message: str) -> None:
        """Start nothing new, kill what runs; the workflow fails with ``message``."""
        if self._shutdown is None and not self.phase.is_final:
            self._shutdown = message
            for task in self._running.values():
                task.cancel()
            self._wake.set()

    def abort(self, message: str) -> None:
        """Mark a workflow that never got to run (engine closed before it started) as failed."""
        if not self.phase.is_final:
            self._finish(WorkflowPhase.FAILED, message)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.phase, self.started_at = WorkflowPhase.RUNNING, _now()
        self._notify()
        deadline = None if self.plan.deadline is None else loop.time() + self.plan.deadline
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    self._schedule(tg)
                    if not self._running:
                        break
                    self._wake.clear()
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._wake.wait()
                    except TimeoutError:
                        deadline = None
                        self.shutdown(WORKFLOW_DEADLINE_MESSAGE)
        except asyncio.CancelledError:
            self._finish(WorkflowPhase.FAILED, "the local workflow engine shut down")
            raise
        except Exception as exc:  # noqa: BLE001 - an engine bug fails this workflow (Error), not the others
            _log.exception("local workflow %s failed unexpectedly", self.name)
            self._finish(WorkflowPhase.ERROR, f"{type(exc).__name__}: {exc}")
            return
        self._finish(*self._assess())

    def _finish(self, phase: WorkflowPhase, message: str | None) -> None:
        for node in self.nodes.values():
            if node.phase not in _FULFILLED:
                node.end(NodePhase.SKIPPED if node.attempts == 0 else NodePhase.FAILED, message)
        self.phase, self.message, self.finished_at = phase, message, _now()
        self._notify()
        self.done.set()

    # -- scheduling --------------------------------------------------------------------------
    def _schedule(self, tg: asyncio.TaskGroup) -> None:
        progress = True
        while progress:
            progress = False
            for name, task in self.plan.tasks.items():
                node = self.nodes[name]
                if node.phase != NodePhase.PENDING or name in self._running:
                    continue
                if self._shutdown is not None:
                    node.end(NodePhase.SKIPPED, self._shutdown)
                elif self._fail_fast_by is not None:
                    node.end(NodePhase.OMITTED, f"omitted: fail fast: task '{self._fail_fast_by}' failed")
                elif any(self.nodes[d].phase not in _FULFILLED for d in task.dependencies):
                    continue
                elif task.depends is not None and not ex.evaluate(task.depends, self._phases(), self._continue_on):
                    node.end(NodePhase.OMITTED, "omitted: depends condition not met")
                else:
                    self._running[name] = tg.create_task(self._run_task(task), name=f"{self.name}.{name}")
                    continue
                progress = True
                self._notify()

    def _phases(self) -> dict[str, NodePhase]:
        return {n: node.phase for n, node in self.nodes.items()}

    def _continue_on(self, task: str) -> set[NodePhase]:
        return set(self.plan.tasks[task].continue_on)

    def _task_scope(self) -> dict[str, str]:
        scope = dict(self._scope)
        for n, node in self.nodes.items():
            for key, value in node.outputs.items():
                scope[f"tasks.{n}.outputs.{key}" if key == "result" else f"tasks.{n}.{key}"] = value
        return scope

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self._slots is not None:
                await stack.enter_async_context(self._slots)
            await stack.enter_async_context(self._machine_slots)
            yield

    async def _run_task(self, task: TaskPlan) -> None:
        node = self.nodes[task.name]
        loop = asyncio.get_running_loop()
        first_start = loop.time()
        try:
            retries = 0
            while True:
                async with self._slot():
                    if node.attempts == 0 and self._fail_fast_by is not None:
                        node.end(NodePhase.OMITTED, f"omitted: fail fast: task '{self._fail_fast_by}' failed")
                        self._notify()
                        return
                    if node.attempts == 0:
                        node.phase, node.started_at, first_start = NodePhase.RUNNING, _now(), loop.time()
                    node.attempts += 1
                    self._notify()
                    try:
                        attempt = task.render(self._task_scope(), retries)
                    except InvalidInputError as exc:
                        self._end_task(task, Outcome(NodePhase.ERROR, str(exc), None, ""))
                        return
                    outcome = await run_attempt(attempt, step_runner=self._step_runner, kill_grace=self._kill_grace)
                retry = attempt.retry
                if not retry.retries_on(outcome.phase) or retries >= retry.limit:
                    self._end_task(task, outcome)
                    return
                retries += 1
                delay = retry.delay(retries)
                if retry.max_duration is not None and loop.time() - first_start + delay > retry.max_duration:
                    exceeded = Outcome(outcome.phase, "Max duration limit exceeded", outcome.exit_code, outcome.stdout)
                    self._end_task(task, exceeded)
                    return
                node.message = outcome.message
                self._notify()
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            node.end(NodePhase.SKIPPED if node.attempts == 0 else NodePhase.FAILED, self._shutdown or "cancelled")
            self._notify()
            raise
        finally:
            self._running.pop(task.name, None)
            self._wake.set()

    def _end_task(self, task: TaskPlan, outcome: Outcome) -> None:
        node = self.nodes[task.name]
        if outcome.exit_code is not None:
            node.outputs = {"result": outcome.stdout, "exitCode": str(outcome.exit_code)}
        node.end(outcome.phase, outcome.message)
        bad = outcome.phase in _BAD and outcome.phase not in task.continue_on
        if bad and self.plan.fail_fast and self._fail_fast_by is None and not self.plan.handles_failure(task.name):
            self._fail_fast_by = task.name
        self._notify()

    # -- outcome -----------------------------------------------------------------------------
    def _assess(self) -> tuple[WorkflowPhase, str | None]:
        if self._shutdown is not None:
            return WorkflowPhase.FAILED, self._shutdown
        branch: dict[str, tuple[NodePhase, str | None]] = {}
        for name in self._topological():
            node = self.nodes[name]
            if node.phase in {NodePhase.SUCCEEDED, *_BAD}:
                branch[name] = (node.phase, name if node.phase in _BAD else None)
                continue
            inherited = [branch[d] for d in self.plan.tasks[name].dependencies]
            bad = [b for b in inherited if b[0] in _BAD]
            branch[name] = bad[0] if bad else (NodePhase.SUCCEEDED, None)
        for target in self.plan.targets:
            phase, culprit = branch[target]
            if phase in _BAD and phase not in self.plan.tasks[target].continue_on and culprit is not None:
                return self._failed(phase, culprit)
        if self._fail_fast_by is not None:
            return self._failed(self.nodes[self._fail_fast_by].phase, self._fail_fast_by)
        return WorkflowPhase.SUCCEEDED, None

    def _failed(self, phase: NodePhase, culprit: str) -> tuple[WorkflowPhase, str]:
        node = self.nodes[culprit]
        detail = f": {node.message}" if node.message else ""
        wf_phase = WorkflowPhase.ERROR if phase == NodePhase.ERROR else WorkflowPhase.FAILED
        return wf_phase, f"child '{culprit}' {phase.value.lower()}{detail}"

    def _topological(self) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name not in seen:
                seen.add(name)
                for dep in self.plan.tasks[name].dependencies:
                    visit(dep)
                order.append(name)

        for name in self.plan.tasks:
            visit(name)
        return order

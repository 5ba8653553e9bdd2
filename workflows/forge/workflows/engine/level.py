"""One DAG node of a local workflow (the entrypoint or a nested dag template): Argo's DAG semantics.

- A task starts once every task its ``depends``/``dependencies`` names is fulfilled and the
  expression holds; when it does not hold the task is ``Omitted`` ("omitted: depends condition
  not met"), and so are its dependants through the bare-name meaning.
- ``failFast`` (default true), per DAG as in Argo: after a task of this DAG fails, unless a
  dependant handles it (names ``task.Failed``/``task.Errored``) or it has ``continueOn``, no new
  task of this DAG starts; running ones finish; the remaining ones become ``Omitted``; the DAG
  fails. A failed nested DAG is a failed task of its parent DAG, whose own failFast then applies.
- A task running a dag template runs it as a nested :class:`DagLevel` (its ``inputs.parameters``
  from the task's arguments, with the workflow's global tags); its node's phase is the nested
  DAG's ``assessDAGPhase``: each leaf task's branch phase is its own phase if it ran, else
  (Skipped/Omitted) the worst of its dependencies' branch phases. The nodes under a DAG that is
  omitted or skipped take its phase and message (Argo never creates them).
- Shutdown (``stop``, ``spec.activeDeadlineSeconds``, see :mod:`forge.workflows.engine.dag`):
  running containers are killed and their nodes fail with the message, at any depth; tasks not
  started yet become ``Skipped``; every running DAG fails with the message.
- Parallelism bounds leaf containers only (a DAG node holds no slot, so nesting cannot
  deadlock): a container acquires the workflow's ``parallelism``, that of every enclosing dag
  template (which thereby bounds the containers running beneath it), then the engine's
  machine-wide ``max_parallel``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase
from forge.workflows.engine import expressions as ex
from forge.workflows.engine.containers import Outcome, StepRunner
from forge.workflows.engine.nodes import FULFILLED, Node, node_keys, now
from forge.workflows.engine.plans import DagPlan, TaskPlan, WorkflowPlan
from forge.workflows.engine.tasks import run_container

__all__ = ["DagLevel", "RunContext"]

_BAD = {NodePhase.FAILED, NodePhase.ERROR}


@dataclass(slots=True)
class RunContext:
    """What every DAG of one workflow shares."""

    name: str
    plan: WorkflowPlan
    scope: Mapping[str, str]  # the global tags: workflow.*
    step_runner: StepRunner | None
    machine_slots: asyncio.Semaphore
    kill_grace: float
    notify: Callable[[], None]
    shutdown: str | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    keys: dict[tuple[str, ...], str] = field(default_factory=dict)
    leaves: set[asyncio.Task[None]] = field(default_factory=set)
    levels: list[DagLevel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = node_keys(self.plan.root)
        self.nodes = {key: Node(key) for key in self.keys.values()}


class DagLevel:
    def __init__(self, ctx: RunContext, plan: DagPlan, path: tuple[str, ...], slots: tuple[asyncio.Semaphore, ...]):
        self.ctx, self.plan, self.path = ctx, plan, path
        self.slots = (*slots, asyncio.Semaphore(plan.parallelism)) if plan.parallelism else slots
        self.nodes = {n: ctx.nodes[ctx.keys[(*path, n)]] for n in plan.tasks}
        self.children = {
            n: DagLevel(ctx, t.dag, (*path, n), self.slots) for n, t in plan.tasks.items() if t.dag is not None
        }
        self.scope: Mapping[str, str] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._fail_fast_by: str | None = None
        self.wake = asyncio.Event()
        ctx.levels.append(self)

    async def run(self, scope: Mapping[str, str]) -> tuple[NodePhase, str | None]:
        """Run every task of this DAG to its end; the DAG's phase and message."""
        self.scope = scope
        async with asyncio.TaskGroup() as tg:
            while True:
                self._schedule(tg)
                if not self._running:
                    break
                self.wake.clear()
                await self.wake.wait()
        return self._assess()

    def settle(self, phase: NodePhase, message: str | None) -> None:
        """This DAG never runs: its nodes (at any depth) take ``phase`` and ``message``."""
        for name, node in self.nodes.items():
            if node.phase not in FULFILLED:
                node.end(phase, message)
            if name in self.children:
                self.children[name].settle(phase, message)

    # -- scheduling --------------------------------------------------------------------------
    def _schedule(self, tg: asyncio.TaskGroup) -> None:
        progress = True
        while progress:
            progress = False
            for name, task in self.plan.tasks.items():
                node = self.nodes[name]
                if node.phase != NodePhase.PENDING or name in self._running:
                    continue
                if self.ctx.shutdown is not None:
                    self._end_unstarted(name, NodePhase.SKIPPED, self.ctx.shutdown)
                elif self._fail_fast_by is not None:
                    self._end_unstarted(name, NodePhase.OMITTED, self._fail_fast_message())
                elif any(self.nodes[d].phase not in FULFILLED for d in task.dependencies):
                    continue
                elif task.depends is not None and not ex.evaluate(task.depends, self._phases(), self._continue_on):
                    self._end_unstarted(name, NodePhase.OMITTED, "omitted: depends condition not met")
                else:
                    started = tg.create_task(self._run_task(task), name=f"{self.ctx.name}.{node.name}")
                    self._running[name] = started
                    if task.dag is None:  # what shutdown cancels: containers, at any depth
                        self.ctx.leaves.add(started)
                        started.add_done_callback(self.ctx.leaves.discard)
                    continue
                progress = True
                self.ctx.notify()

    def _end_unstarted(self, name: str, phase: NodePhase, message: str) -> None:
        self.nodes[name].end(phase, message)
        if name in self.children:
            self.children[name].settle(phase, message)

    def _fail_fast_message(self) -> str:
        return f"omitted: fail fast: task '{self._fail_fast_by}' failed"

    def _phases(self) -> dict[str, NodePhase]:
        return {n: node.phase for n, node in self.nodes.items()}

    def _continue_on(self, task: str) -> set[NodePhase]:
        return set(self.plan.tasks[task].continue_on)

    def task_scope(self) -> dict[str, str]:
        scope = dict(self.scope)
        for n, node in self.nodes.items():
            for key, value in node.outputs.items():
                scope[f"tasks.{n}.outputs.{key}" if key == "result" else f"tasks.{n}.{key}"] = value
        return scope

    def fail_fast_by(self) -> str | None:
        return self._fail_fast_by

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for semaphore in self.slots:
                await stack.enter_async_context(semaphore)
            await stack.enter_async_context(self.ctx.machine_slots)
            yield

    async def _run_task(self, task: TaskPlan) -> None:
        try:
            if task.dag is None:
                outcome = await run_container(self, task, self.nodes[task.name])
            else:
                outcome = await self._run_dag(task)
            if outcome is not None:
                self.end_task(task, outcome)
        except asyncio.CancelledError:
            self.nodes[task.name].end_unfinished(self.ctx.shutdown or "cancelled")
            if task.name in self.children:
                self.children[task.name].settle(NodePhase.SKIPPED, self.ctx.shutdown or "cancelled")
            self.ctx.notify()
            raise
        finally:
            self._running.pop(task.name, None)
            self.wake.set()

    async def _run_dag(self, task: TaskPlan) -> Outcome:
        node, child = self.nodes[task.name], self.children[task.name]
        node.phase, node.started_at = NodePhase.RUNNING, now()
        self.ctx.notify()
        try:
            inputs = task.inputs(self.task_scope(), None)
        except InvalidInputError as exc:  # e.g. the output of a task that did not run
            child.settle(NodePhase.SKIPPED, str(exc))
            return Outcome(NodePhase.ERROR, str(exc), None, "")
        phase, message = await child.run({**self.ctx.scope, **inputs})
        return Outcome(phase, message, None, "")

    def end_task(self, task: TaskPlan, outcome: Outcome) -> None:
        node = self.nodes[task.name]
        if outcome.exit_code is not None:
            node.outputs = {"result": outcome.stdout, "exitCode": str(outcome.exit_code)}
        node.end(outcome.phase, outcome.message)
        bad = outcome.phase in _BAD and outcome.phase not in task.continue_on
        if bad and self.plan.fail_fast and self._fail_fast_by is None and not self.plan.handles_failure(task.name):
            self._fail_fast_by = task.name
        self.ctx.notify()

    # -- outcome -----------------------------------------------------------------------------
    def _assess(self) -> tuple[NodePhase, str | None]:
        if self.ctx.shutdown is not None:
            return NodePhase.FAILED, self.ctx.shutdown
        branch: dict[str, tuple[NodePhase, str | None]] = {}
        for name in self.plan.topological():
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
        return NodePhase.SUCCEEDED, None

    def _failed(self, phase: NodePhase, culprit: str) -> tuple[NodePhase, str]:
        node = self.nodes[culprit]
        detail = f": {node.message}" if node.message else ""
        return phase, f"child '{culprit}' {phase.value.lower()}{detail}"

"""One running Workflow of the local engine: its DAG tree over local containers, and its lifecycle.

The DAG semantics (dependencies, ``failFast`` per DAG, nested dag templates, ``assessDAGPhase``,
parallelism) are in :mod:`forge.workflows.engine.level`; node naming in
:mod:`forge.workflows.engine.nodes`. The workflow's phase is the entrypoint DAG's.

- Shutdown (``stop``, ``spec.activeDeadlineSeconds``): running containers are killed wherever
  they are in the tree and their nodes fail with the message; tasks not started yet become
  ``Skipped``; running DAG nodes and the workflow fail with the message.
- Cancellation (the engine closing) kills everything the same way and fails the workflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime

from forge.ports.engine import NodePhase, WorkflowPhase, WorkflowStatus
from forge.workflows.engine.containers import StepRunner
from forge.workflows.engine.level import DagLevel, RunContext
from forge.workflows.engine.nodes import Node, now
from forge.workflows.engine.plans import WorkflowPlan

__all__ = ["WORKFLOW_DEADLINE_MESSAGE", "DagRun"]

WORKFLOW_DEADLINE_MESSAGE = "Step exceeded its deadline"
_log = logging.getLogger(__name__)


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
        self.name, self.plan = name, plan
        self._ctx = RunContext(name, plan, dict(scope), step_runner, machine_slots, kill_grace, self._notify)
        slots = (asyncio.Semaphore(plan.parallelism),) if plan.parallelism else ()
        self._root = DagLevel(self._ctx, plan.root, (), slots)
        self.phase = WorkflowPhase.PENDING
        self.message: str | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self._changed = asyncio.Event()
        self.done = asyncio.Event()

    @property
    def nodes(self) -> dict[str, Node]:
        return self._ctx.nodes

    # -- observation -------------------------------------------------------------------------
    def snapshot(self) -> WorkflowStatus:
        nodes = {key: node.status() for key, node in self.nodes.items()}
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
        """Start nothing new, kill every running container; the workflow fails with ``message``."""
        if self._ctx.shutdown is None and not self.phase.is_final:
            self._ctx.shutdown = message
            for task in self._ctx.leaves:
                task.cancel()
            for level in self._ctx.levels:
                level.wake.set()

    def abort(self, message: str) -> None:
        """Mark a workflow that never got to run (engine closed before it started) as failed."""
        if not self.phase.is_final:
            self._finish(WorkflowPhase.FAILED, message)

    async def run(self) -> None:
        self.phase, self.started_at = WorkflowPhase.RUNNING, now()
        self._notify()
        try:
            async with asyncio.TaskGroup() as tg:
                root = tg.create_task(self._root.run(self._ctx.scope), name=f"workflow {self.name} main")
                if self.plan.deadline is not None:
                    tg.create_task(self._deadline(root, self.plan.deadline), name=f"workflow {self.name} deadline")
            phase, message = root.result()
        except asyncio.CancelledError:
            self._finish(WorkflowPhase.FAILED, "the local workflow engine shut down")
            raise
        except Exception as exc:  # noqa: BLE001 - an engine bug fails this workflow (Error), not the others
            _log.exception("local workflow %s failed unexpectedly", self.name)
            self._finish(WorkflowPhase.ERROR, f"{type(exc).__name__}: {exc}")
            return
        self._finish(WorkflowPhase(phase.value), message)

    async def _deadline(self, root: asyncio.Task[tuple[NodePhase, str | None]], seconds: float) -> None:
        _done, pending = await asyncio.wait({root}, timeout=seconds)
        if pending:
            self.shutdown(WORKFLOW_DEADLINE_MESSAGE)

    def _finish(self, phase: WorkflowPhase, message: str | None) -> None:
        for node in self.nodes.values():
            node.end_unfinished(message)
        self.phase, self.message, self.finished_at = phase, message, now()
        self._notify()
        self.done.set()

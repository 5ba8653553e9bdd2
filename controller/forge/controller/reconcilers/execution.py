"""Discovered run → step executions → WorkflowTemplate (Hera) → workflow on the engine → final status.

* Step statuses come from the CI workers (authoritative: attempts, exit codes, logs). The
  controller follows the workflow and, when it ends, settles what no worker could report:
  a task whose dispatcher failed (say, a timeout) fails its step with the node's message, and
  ``finish_run`` marks every step that never started ``skipped``.
* A cancelled run (``DELETE /v1/runs/{id}``) stops its workflow; ``finish_run`` marks running
  steps ``cancelled`` and the rest ``skipped``.
* The local engine keeps workflows in memory. After a controller restart a run whose workflow
  is gone is resubmitted once from the same (deterministic) template: every job key is the same,
  so steps that already finished reuse their stored results and steps still running in a worker
  are awaited, not run twice. A workflow lost again fails the run with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from forge.controller.commit_status import CommitStatuses
from forge.controller.reconcilers.run_tasks import RunTasks, idle
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun
from forge.domain.messages import CANCEL_SUBJECT
from forge.domain.status import Status
from forge.errors import ConflictError, ForgeError, NotFoundError
from forge.ports import MessageBus, NodePhase, RunStore, WorkflowEngine, WorkflowPhase, WorkflowStatus
from forge.workflows.templates import TemplateSpec, build_template, has_work

__all__ = ["ExecutionReconciler", "TemplateOptions"]

log = logging.getLogger("forge.controller.execution")

_FAILED_NODES = {NodePhase.FAILED, NodePhase.ERROR}


@dataclass(frozen=True, slots=True)
class TemplateOptions:
    image: str
    namespace: str
    parallelism: int


@dataclass
class ExecutionReconciler:
    store: RunStore
    bus: MessageBus
    engine: WorkflowEngine
    options: TemplateOptions
    statuses: CommitStatuses | None = None
    poll_interval: float = 0.5
    batch: int = 10

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = RunTasks(group)
            for run in await self.store.runs_executing():
                tasks.start(run.id, self._guard(run.id, self._follow(run.id, str(run.workflow_name))))
            while not stop.is_set():
                if not await self._tick(tasks):
                    await idle(stop, self.poll_interval)
            tasks.cancel_all()

    async def _tick(self, tasks: RunTasks) -> bool:
        try:
            claimed = await self.store.claim_execution(limit=self.batch)
            cancelled = await self.store.runs_cancel_requested()
        except ForgeError as exc:
            log.warning("cannot read runs: %s", exc)
            return False
        for run in claimed:
            tasks.start(run.id, self._guard(run.id, self._execute(run)))
        for run in cancelled:
            try:
                await self._cancel(run, tasks)
            except ForgeError as exc:  # one run's trouble never stops the reconciler
                log.error("run %s: cancel failed: %s", run.id, exc)
        return bool(claimed)

    async def _guard(self, run_id: UUID, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ForgeError as exc:
            log.error("run %s: %s", run_id, exc)
            with contextlib.suppress(ForgeError):
                await self.store.finish_run(run_id, Status.FAILED, error=str(exc))

    async def _execute(self, run: PipelineRun) -> None:
        discovery = DiscoveryResult.model_validate(run.discovery)
        if not has_work(discovery):
            await self._finish(run.id, Status.SUCCESS, None)
            log.info("run %s: nothing affected, success", run.id)
            return
        template = await self._template(run, discovery)
        workflow = await self._submit(run, template)
        submitted = await self.store.set_workflow(run.id, workflow)
        log.info("run %s: workflow %s submitted", run.id, workflow)
        if self.statuses is not None:
            await self.statuses.report(submitted, detail=f"{len(_step_ids_by_task(template))} steps")
        await self._follow(run.id, workflow, _step_ids_by_task(template))

    async def _template(self, run: PipelineRun, discovery: DiscoveryResult) -> dict[str, Any]:
        """The run's WorkflowTemplate; the same inputs always give the same template."""
        executions = await self.store.create_executions(run.id, discovery)  # idempotent
        repo = await self.store.get_repository(run.repository)
        spec = TemplateSpec(
            run_id=run.id,
            repository=run.repository,
            commit_sha=run.commit_sha,
            branch=run.branch,
            clone_url=repo.clone_url,
            discovery=discovery,
            step_ids=executions.step_ids(),
            image=self.options.image,
            namespace=self.options.namespace,
            parallelism=self.options.parallelism,
        )
        return build_template(spec)

    async def _submit(self, run: PipelineRun, template: Mapping[str, Any]) -> str:
        name = await self.engine.create_template(template)
        return await self.engine.submit(name, parameters={}, labels={"forge.projectcatalyst.io/run-id": str(run.id)})

    async def _resubmit(self, run_id: UUID, lost: str) -> tuple[str, dict[str, UUID]] | None:
        """Submit a lost workflow again (once); None when the run can no longer go on."""
        run = await self.store.get_run(run_id)
        if run.status.is_final or run.cancel_requested_at is not None or run.discovery is None:
            return None
        template = await self._template(run, DiscoveryResult.model_validate(run.discovery))
        workflow = await self._submit(run, template)
        await self.store.set_workflow(run_id, workflow, replaces=lost)
        log.warning("run %s: workflow %s was lost by the engine; resubmitted as %s", run_id, lost, workflow)
        return workflow, _step_ids_by_task(template)

    async def _follow(
        self, run_id: UUID, workflow: str, steps: Mapping[str, UUID] | None = None, *, resubmitted: bool = False
    ) -> None:
        final: WorkflowStatus | None = None
        try:
            async for status in self.engine.watch(workflow):
                final = status
        except NotFoundError:
            again = None if resubmitted else await self._resubmit(run_id, workflow)
            if again is None:
                await self._finish(run_id, Status.FAILED, f"workflow {workflow} no longer exists")
                return
            await self._follow(run_id, again[0], again[1], resubmitted=True)
            return
        if final is None or not final.phase.is_final:
            return
        run = await self.store.get_run(run_id)
        if run.status.is_final:
            return
        if run.cancel_requested_at is not None:  # the workflow ended while its cancel was handled
            await self._finish(run_id, Status.CANCELLED, "cancelled by request")
            return
        if steps:
            await self._settle_failed_nodes(final, steps)
        if final.phase is WorkflowPhase.SUCCEEDED:
            await self._finish(run_id, Status.SUCCESS, None)
        else:
            await self._finish(run_id, Status.FAILED, final.message or f"workflow {final.phase}")
        log.info("run %s: workflow %s %s", run_id, workflow, final.phase)

    async def _settle_failed_nodes(self, status: WorkflowStatus, steps: Mapping[str, UUID]) -> None:
        for node in status.nodes.values():
            step_id = steps.get(node.name)
            if step_id is None or node.phase not in _FAILED_NODES:
                continue
            step = await self.store.get_step(step_id)
            if step.status.is_final:
                continue
            with contextlib.suppress(ConflictError):
                if step.status is Status.PENDING:
                    await self.store.set_step_status(step_id, Status.RUNNING)
                await self.store.set_step_status(step_id, Status.FAILED, message=node.message)

    async def _cancel(self, run: PipelineRun, tasks: RunTasks) -> None:
        await tasks.cancel(run.id)  # stop following first: the cancel decides the end
        with contextlib.suppress(ForgeError):  # workers kill the run's running steps
            await self.bus.respond(CANCEL_SUBJECT, str(run.id).encode())
        if run.workflow_name:
            with contextlib.suppress(NotFoundError):
                await self.engine.stop(run.workflow_name, message="cancelled by request")
        await self._finish(run.id, Status.CANCELLED, "cancelled by request")
        log.info("run %s cancelled", run.id)

    async def _finish(self, run_id: UUID, status: Status, error: str | None) -> None:
        """``finish_run``; a run that already ended (another path got there first) is left as it is."""
        try:
            finished = await self.store.finish_run(run_id, status, error=error)
        except ConflictError as exc:
            log.info("run %s: %s", run_id, exc)
            return
        if self.statuses is not None:
            await self.statuses.report(finished)


def _step_ids_by_task(template: Mapping[str, Any]) -> dict[str, UUID]:
    """DAG task name → StepExecution id, read from each task's job payload."""
    found: dict[str, UUID] = {}
    for tmpl in template["spec"]["templates"]:
        for task in (tmpl.get("dag") or {}).get("tasks", []):
            params = {p["name"]: p.get("value", "") for p in (task.get("arguments") or {}).get("parameters", [])}
            payload = params.get("payload")
            if payload:
                data = json.loads(payload.replace("{{retries}}", "0"))
                if data.get("step_execution_id"):
                    found[task["name"]] = UUID(data["step_execution_id"])
    return found

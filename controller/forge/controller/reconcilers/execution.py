"""Discovered run → step executions → WorkflowTemplate (Hera) → workflow on the engine → final status.

Runs on :class:`~forge.controller.reconcile.ReconcileLoop`, so the engine or PostgreSQL being
away (Argo answering 503, a database restart) is retried and never fails a run. ``reconcile``
reads the run and carries on from where it is: cancel requested → cancel; workflow recorded →
follow it; otherwise build, submit and follow.

* Step statuses come from the workers' step events, recorded by
  :class:`~forge.controller.step_events.StepEventRecorder` (authoritative: attempts, exit codes,
  logs). When the workflow ends, the reconciler first waits until every event published so far
  is recorded, then settles what no worker could report: a task whose dispatcher failed (say, a
  timeout) fails its step with the node's message, and ``finish_run`` marks every step that never
  started ``skipped``.
* A cancelled run (``DELETE /v1/runs/{id}``) is told to the workers on ``pipeline.cancel.<run>``
  (kept in a stream, so a job pulled later is not started either), its workflow is stopped and
  ``finish_run`` marks running steps ``cancelled`` and the rest ``skipped``.
* The local engine keeps workflows in memory. After a controller restart a run whose workflow
  is gone is resubmitted once from the same (deterministic) template: every job key is the same,
  so steps that already finished reuse their stored results and steps still running in a worker
  are awaited, not run twice. A workflow lost again fails the run with a clear message.
* Quota: with ``runs_per_repository`` > 0 a repository has at most that many runs executing;
  its other discovered runs stay unclaimed (``running``, discovery done, no workflow) and are
  claimed oldest first as places free up (``RunStore.claim_execution(per_repository=...)``).
* A claim is a lease (:mod:`forge.controller.leases`) until the workflow is recorded: renewed every
  third of ``claim_lease`` while the template is built and submitted, and once more before each
  write (the submit, the workflow, a success with nothing to do, a failure). A run whose controller
  died before recording its workflow is claimed by another one after ``claim_lease`` seconds (30 s).
  A controller whose claim was taken over stops and writes nothing for the run; a workflow it had
  submitted is stopped (the new holder's workflow has the same job keys). A controller that stops
  (its run tasks cancelled) or meets a transient error before the workflow is recorded hands the
  claim back, so the run is claimed again at once, by another controller or on its own next poll.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import stamina

from forge.controller.commit_status import CommitStatuses
from forge.controller.leases import ClaimLost, Claims, holding
from forge.controller.step_events import StepEventRecorder
from forge.domain.entities import PipelineRun
from forge.domain.messages import cancel_subject
from forge.domain.status import Status
from forge.errors import ConflictError, ForgeError, NotFoundError, PermanentError, TransientError
from forge.ports import (
    ExecutionStore,
    MessageBus,
    NodePhase,
    RepositoryStore,
    RunStore,
    WorkflowEngine,
    WorkflowPhase,
    WorkflowStatus,
)
from forge.retrying import transient
from forge.runtime import instance_id
from forge.workflows.templates import TemplateSpec, build_template, has_work

__all__ = ["ExecutionReconciler", "TemplateOptions"]

log = logging.getLogger("forge.controller.execution")

_FAILED_NODES = {NodePhase.FAILED, NodePhase.ERROR}
_CANCELLED = "cancelled by request"


@dataclass(frozen=True, slots=True)
class TemplateOptions:
    image: str
    namespace: str
    parallelism: int


@dataclass
class ExecutionReconciler:
    runs: RunStore
    repositories: RepositoryStore
    executions: ExecutionStore
    bus: MessageBus
    engine: WorkflowEngine
    recorder: StepEventRecorder
    options: TemplateOptions
    statuses: CommitStatuses | None = None
    batch: int = 10
    runs_per_repository: int = 0  # the quota (FORGE_QUOTAS__RUNS_PER_REPOSITORY); 0: none
    claim_lease: float = 30.0
    """Seconds a claimed run stays this controller's unrenewed (``FORGE_CONTROLLER__CLAIM_LEASE``)."""
    claimer: str = field(default_factory=instance_id)
    """This controller instance, as its claims name it."""
    name: str = "execution"
    _resubmitted: set[UUID] = field(default_factory=set)  # runs whose lost workflow was submitted again

    async def resume(self) -> Sequence[UUID]:
        return [run.id for run in await self.runs.runs_executing()]

    async def claim(self) -> Sequence[UUID]:
        claimed = await self.runs.claim_execution(
            limit=self.batch, claimer=self.claimer, lease=self.claim_lease, per_repository=self.runs_per_repository
        )
        return [run.id for run in claimed]

    async def interrupts(self) -> Sequence[UUID]:
        """Runs whose current reconcile must stop and start over: their cancel was requested."""
        return [run.id for run in await self.runs.runs_cancel_requested()]

    async def reconcile(self, run_id: UUID) -> None:
        run = await self.runs.get_run(run_id)
        if run.status.is_final:
            return
        if run.cancel_requested_at is not None:
            await self._cancel(run)
        elif run.workflow_name is not None:
            await self._follow(run, run.workflow_name)
        else:
            renew = functools.partial(self.runs.renew_execution_claims, claimer=self.claimer)
            release = functools.partial(self.runs.release_execution_claims, claimer=self.claimer)
            try:
                async with holding(renew, [run.id], release=release, lease=self.claim_lease, what="run") as claims:
                    submitted = await self._execute(run, claims)
            except ClaimLost:
                return
            if submitted is not None:
                await self._follow(*submitted)

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        run = await self.runs.get_run(run_id)
        if run.workflow_name is not None and not run.status.is_final:
            with contextlib.suppress(ForgeError):  # best effort: the run fails either way
                await self.engine.stop(run.workflow_name, message=f"run failed: {error.message}")
        await self._finish(run_id, Status.FAILED, error.message, error.code)

    # -- acting -----------------------------------------------------------------------------------

    async def _execute(self, run: PipelineRun, claims: Claims) -> tuple[PipelineRun, str, dict[str, Any]] | None:
        """Submit the claimed run's workflow and record it; what to follow then (``None``: nothing to do).

        Each write checks the claim first, and so does an error that fails the run: a run whose claim was
        taken over gets nothing from here (``ClaimLost``), and a workflow submitted for it is stopped.
        """
        workflow: str | None = None
        try:
            try:
                if run.discovery is None:
                    raise PermanentError(f"run {run.id} has no discovery to execute", code="invalid_state")
                if not has_work(run.discovery):
                    await claims.check(run.id)
                    await self._finish(run.id, Status.SUCCESS, None, None)
                    log.info("run %s: nothing affected, success", run.id)
                    return None
                template = await self._template(run)
                await claims.check(run.id)
                workflow = await self._submit(run, template)
                # Retried here, not by re-entering: submitting again would start a second workflow.
                async for attempt in stamina.retry_context(on=transient, attempts=None, timeout=None, wait_max=10.0):
                    with attempt:
                        await claims.check(run.id)
                        submitted = await self.runs.set_workflow(run.id, workflow)
            except Exception as exc:
                if not isinstance(exc, TransientError | ClaimLost):  # the loop fails the run: if it is still ours
                    await claims.check(run.id)
                raise
        except ClaimLost:
            if workflow is not None:
                with contextlib.suppress(ForgeError):  # best effort: the new holder submits its own
                    await self.engine.stop(workflow, message="its run was claimed by another controller")
            raise
        log.info("run %s: workflow %s submitted", run.id, workflow)
        if self.statuses is not None:
            await self.statuses.report(submitted, detail=f"{len(_step_ids_by_task(template))} steps")
        return submitted, workflow, template

    async def _template(self, run: PipelineRun) -> dict[str, Any]:
        """The run's WorkflowTemplate; the same inputs always give the same template."""
        assert run.discovery is not None
        executions = await self.executions.create_executions(run.id, run.discovery)  # idempotent
        repo = await self.repositories.get_repository(run.repository)
        spec = TemplateSpec(
            run_id=run.id,
            repository=run.repository,
            commit_sha=run.commit_sha,
            branch=run.branch,
            clone_url=repo.clone_url,
            triggered_by=run.triggered_by,
            granted_secrets=frozenset(repo.secrets),
            pool=repo.pool,
            discovery=run.discovery,
            step_ids=executions.step_ids(),
            image=self.options.image,
            namespace=self.options.namespace,
            parallelism=self.options.parallelism,
        )
        return build_template(spec)

    async def _submit(self, run: PipelineRun, template: Mapping[str, Any]) -> str:
        name = await self.engine.create_template(template)
        return await self.engine.submit(name, parameters={}, labels={"forge.projectcatalyst.io/run-id": str(run.id)})

    async def _resubmit(self, run: PipelineRun, lost: str) -> tuple[str, dict[str, Any]]:
        """Submit a lost workflow again, once."""
        template = await self._template(run)
        workflow = await self._submit(run, template)
        await self.runs.set_workflow(run.id, workflow, replaces=lost)
        log.warning("run %s: workflow %s was lost by the engine; resubmitted as %s", run.id, lost, workflow)
        return workflow, template

    async def _follow(self, run: PipelineRun, workflow: str, template: Mapping[str, Any] | None = None) -> None:
        final: WorkflowStatus | None = None
        try:
            async for status in self.engine.watch(workflow):
                final = status
        except NotFoundError:
            if run.id in self._resubmitted:  # lost twice (a retried follow is the same run: still once)
                raise PermanentError(f"workflow {workflow} no longer exists", code="workflow_lost") from None
            self._resubmitted.add(run.id)
            again, template = await self._resubmit(run, workflow)
            await self._follow(run, again, template)
            return
        if final is None or not final.phase.is_final:
            return
        await self.recorder.caught_up()  # every step outcome a worker published is recorded now
        current = await self.runs.get_run(run.id)
        if current.status.is_final:
            return
        if current.cancel_requested_at is not None:  # the workflow ended while its cancel was handled
            await self._finish(run.id, Status.CANCELLED, _CANCELLED, "cancelled")
            return
        await self._settle_failed_nodes(final, _step_ids_by_task(template or await self._template(current)))
        if final.phase is WorkflowPhase.SUCCEEDED:
            await self._finish(run.id, Status.SUCCESS, None, None)
        else:
            await self._finish(run.id, Status.FAILED, final.message or f"workflow {final.phase}", "workflow_failed")
        log.info("run %s: workflow %s %s", run.id, workflow, final.phase)

    async def _settle_failed_nodes(self, status: WorkflowStatus, steps: Mapping[str, UUID]) -> None:
        for node in status.nodes.values():
            step_id = steps.get(node.name)
            if step_id is not None and node.phase in _FAILED_NODES:
                await self.executions.fail_step(step_id, node.message)

    async def _cancel(self, run: PipelineRun) -> None:
        # Kept in a stream: workers kill the run's running steps and never start its queued jobs.
        await self.bus.publish(cancel_subject(run.id), str(run.id).encode(), msg_id=f"cancel.{run.id}")
        if run.workflow_name:
            with contextlib.suppress(NotFoundError):
                await self.engine.stop(run.workflow_name, message=_CANCELLED)
        await self._finish(run.id, Status.CANCELLED, _CANCELLED, "cancelled")
        log.info("run %s cancelled", run.id)

    async def _finish(self, run_id: UUID, status: Status, error: str | None, code: str | None) -> None:
        """``finish_run``; a run that already ended (another path got there first) is left as it is."""
        self._resubmitted.discard(run_id)
        try:
            finished = await self.runs.finish_run(run_id, status, error=error, code=code)
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

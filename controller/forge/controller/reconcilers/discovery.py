"""Pending run → discovery job → the run records its discovery (or fails with the reasons).

Runs on :class:`~forge.controller.reconcile.ReconcileLoop`: PostgreSQL, NATS or S3 being away
delays a discovery, never fails it. The dispatch is idempotent (the job key is the run's), so a
retried or resumed reconcile waits for the same job instead of starting another. A discovery that
no worker finished before its deadline fails the run (``code="timeout"``); an invalid
configuration fails it with every ``file:line: field: reason`` (``code="invalid_config"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from forge.controller.commit_status import CommitStatuses
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun
from forge.domain.messages import DiscoveryPayload, Job, JobType, Result
from forge.domain.status import Status
from forge.errors import ConflictError, ForgeError, PermanentError, TransientError
from forge.jobs.dispatch import Dispatcher
from forge.ports import ObjectStore, RepositoryStore, RunStore

__all__ = ["DiscoveryReconciler"]

log = logging.getLogger("forge.controller.discovery")


@dataclass
class DiscoveryReconciler:
    runs: RunStore
    repositories: RepositoryStore
    dispatcher: Dispatcher
    objects: ObjectStore
    timeout: float
    statuses: CommitStatuses | None = None
    batch: int = 10
    name: str = "discovery"

    async def resume(self) -> Sequence[UUID]:
        return [run.id for run in await self.runs.runs_discovering()]

    async def claim(self) -> Sequence[UUID]:
        claimed = await self.runs.claim_discovery(limit=self.batch)
        for run in claimed:
            if self.statuses is not None:
                await self.statuses.report(run, detail="discovering")
        return [run.id for run in claimed]

    async def interrupts(self) -> Sequence[UUID]:
        return []  # a cancel during discovery is the execution reconciler's; recording then conflicts

    async def reconcile(self, run_id: UUID) -> None:
        run = await self.runs.get_run(run_id)
        if run.status.is_final or run.discovery_status is not Status.RUNNING:
            return
        result = await self._dispatch(run)
        if not result.success:
            error = result.error
            raise PermanentError(
                error.message if error else "discovery failed", code=error.code if error else "discovery_failed"
            )
        discovery, key = await self._discovery_of(result)
        try:
            await self.runs.record_discovery(run.id, discovery, key)
        except ConflictError as exc:  # e.g. the run was cancelled while its discovery ran
            log.info("run %s: discovery result not recorded: %s", run.id, exc)
            return
        log.info("run %s discovered (%d affected)", run.id, len(discovery.affected))

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        try:
            failed = await self.runs.fail_discovery(run_id, error.message, code=error.code)
        except ConflictError as exc:  # it ended meanwhile (cancelled): nothing to fail
            log.info("run %s: %s", run_id, exc)
            return
        if self.statuses is not None:
            await self.statuses.report(failed)

    async def _dispatch(self, run: PipelineRun) -> Result:
        repo = await self.repositories.get_repository(run.repository)
        payload = DiscoveryPayload(
            clone_url=repo.clone_url,
            branch=run.branch,
            tag=run.tag,
            base_sha=run.base_sha,
            release_projects=list(run.release_projects),
        )
        job = Job(
            key=f"discovery.{run.id}",
            type=JobType.DISCOVERY,
            run_id=run.id,
            repository=run.repository,
            commit_sha=run.commit_sha,
            pool=repo.pool,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=self.timeout),
        )
        try:
            return await self.dispatcher.dispatch(job, timeout=self.timeout)
        except TransientError as exc:
            if exc.code != "dispatch_timeout":
                raise
            raise PermanentError(f"discovery did not finish within {self.timeout:g}s", code="timeout") from exc

    async def _discovery_of(self, result: Result) -> tuple[DiscoveryResult, str]:
        """The discovery the worker stored; the result carries only where it is."""
        key = (result.data or {}).get("object_key")
        if not isinstance(key, str):
            raise PermanentError(f"result of {result.key} names no stored discovery", code="invalid_result")
        return DiscoveryResult.model_validate_json(await self.objects.get(key)), key

"""Pending run → discovery job → the run records its discovery (or fails with the reasons)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from forge.controller.commit_status import CommitStatuses
from forge.controller.reconcilers.run_tasks import RunTasks, idle
from forge.domain.entities import PipelineRun
from forge.domain.messages import DiscoveryPayload, Job, JobType, Result
from forge.errors import ConflictError, ForgeError, TransientError
from forge.jobs.dispatch import dispatch
from forge.ports import MessageBus, ObjectStore, RunStore

__all__ = ["DiscoveryReconciler"]

log = logging.getLogger("forge.controller.discovery")


@dataclass
class DiscoveryReconciler:
    store: RunStore
    bus: MessageBus
    objects: ObjectStore
    timeout: float
    statuses: CommitStatuses | None = None
    poll_interval: float = 0.5
    batch: int = 10

    async def run(self, stop: asyncio.Event) -> None:
        """Claim pending runs until ``stop``; runs left mid-discovery are resumed on the next start."""
        async with asyncio.TaskGroup() as group:
            tasks = RunTasks(group)
            for run in await self.store.runs_discovering():
                tasks.start(run.id, self._discover(run))
            while not stop.is_set():
                try:
                    claimed = await self.store.claim_discovery(limit=self.batch)
                except ForgeError as exc:
                    log.warning("cannot claim runs: %s", exc)
                    claimed = []
                for run in claimed:
                    tasks.start(run.id, self._discover(run))
                if not claimed:
                    await idle(stop, self.poll_interval)
            tasks.cancel_all()

    async def _discover(self, run: PipelineRun) -> None:
        if self.statuses is not None:
            await self.statuses.report(run, detail="discovering")
        try:
            result = await self._dispatch(run)
            if result.success:
                discovery, key = await self._discovery_of(result)
                await self.store.record_discovery(run.id, discovery, key)
                log.info("run %s discovered (%d affected)", run.id, len(discovery.get("affected", [])))
            else:
                reason = result.error.message if result.error else "discovery failed"
                failed = await self.store.fail_discovery(run.id, reason)
                if self.statuses is not None:
                    await self.statuses.report(failed)
                log.info("run %s failed discovery: %s", run.id, reason.splitlines()[0])
        except TransientError as exc:
            failed = await self.store.fail_discovery(run.id, f"discovery did not finish: {exc}")
            if self.statuses is not None:
                await self.statuses.report(failed)
        except ConflictError as exc:  # e.g. the run was cancelled while its discovery ran
            log.info("run %s: discovery result not recorded: %s", run.id, exc)
        except ForgeError as exc:
            log.error("run %s: %s; it stays in discovery until the controller restarts", run.id, exc)

    async def _dispatch(self, run: PipelineRun) -> Result:
        repo = await self.store.get_repository(run.repository)
        payload = DiscoveryPayload(clone_url=repo.clone_url, branch=run.branch, base_sha=run.base_sha)
        job = Job(
            key=f"discovery.{run.id}",
            type=JobType.DISCOVERY,
            run_id=run.id,
            repository=run.repository,
            commit_sha=run.commit_sha,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=self.timeout),
        )
        return await dispatch(self.bus, job, timeout=self.timeout)

    async def _discovery_of(self, result: Result) -> tuple[dict[str, Any], str]:
        data = result.data
        if data is None and result.object_key is not None:
            data = json.loads(await self.objects.get(result.object_key))
        if not data or "discovery" not in data:
            raise TransientError(f"result of {result.key} carries no discovery")
        return data["discovery"], data["object_key"]

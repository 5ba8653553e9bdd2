"""Runs by status transition: a ``RunStore`` that counts what it changes (API and controller).

The API counts the runs it creates (by trigger) and tells its request span which run it made
(``forge.observability.http.note_run``); the controller counts every status it moves a run to
(``running`` when discovery claims it, then ``success``/``failed``/``cancelled``). A transition
retried after a lost answer may be counted twice; the counters are rates, not a ledger (PostgreSQL is).
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prometheus_client import Counter

from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun
from forge.domain.status import Status
from forge.observability.http import note_run
from forge.ports.store import NewRun, RunStore

__all__ = ["RUNS_CREATED", "RUN_TRANSITIONS", "observed_runs"]

RUNS_CREATED = Counter("forge_runs_created", "Pipeline runs created, by trigger", ["trigger"])
RUN_TRANSITIONS = Counter(
    "forge_run_transitions", "Pipeline runs the controller moved to a status, by that status", ["status"]
)


def observed_runs(runs: RunStore) -> RunStore:
    """``runs``, counting creations and status transitions."""
    return cast(RunStore, _ObservedRuns(runs))


class _ObservedRuns:
    __slots__ = ("__weakref__", "_runs")  # the watch hub keys its channels weakly by the run store

    def __init__(self, runs: RunStore) -> None:
        self._runs = runs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runs, name)

    async def create_run(self, new: NewRun) -> tuple[PipelineRun, bool]:
        run, created = await self._runs.create_run(new)
        if created:
            RUNS_CREATED.labels(run.trigger.value).inc()
        note_run(run.id, created=created)
        return run, created

    async def claim_discovery(self, *, limit: int) -> list[PipelineRun]:
        runs = await self._runs.claim_discovery(limit=limit)
        if runs:
            RUN_TRANSITIONS.labels(Status.RUNNING.value).inc(len(runs))
        return runs

    async def record_discovery(self, run_id: UUID, discovery: DiscoveryResult, object_key: str) -> PipelineRun:
        return _counted(await self._runs.record_discovery(run_id, discovery, object_key), only_final=True)

    async def fail_discovery(self, run_id: UUID, error: str, *, code: str) -> PipelineRun:
        return _counted(await self._runs.fail_discovery(run_id, error, code=code))

    async def finish_run(
        self, run_id: UUID, status: Status, *, error: str | None = None, code: str | None = None
    ) -> PipelineRun:
        return _counted(await self._runs.finish_run(run_id, status, error=error, code=code))


def _counted(run: PipelineRun, *, only_final: bool = False) -> PipelineRun:
    if not only_final or run.status in {Status.SUCCESS, Status.FAILED, Status.CANCELLED}:
        RUN_TRANSITIONS.labels(run.status.value).inc()
    return run

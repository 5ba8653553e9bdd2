"""Quotas: runs executing at once per repository (every store adapter), steps in flight per worker process.

The run quota is ``RunStore.claim_execution(per_repository=N)`` (``FORGE_QUOTAS__RUNS_PER_REPOSITORY``):
a repository never has more than N runs executing (a workflow recorded, or a claim renewed within
its lease); its other discovered runs stay unclaimed and are claimed oldest first as places
free up. The step quota is ``FORGE_WORKER__CONCURRENCY``: one worker process never runs more jobs of
its type at once, however many are queued.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest
from tests.integration.store.test_executions import discovered_runs
from tests.unit.controller.support import DictObjects

from forge.domain.messages import STREAMS, CiPayload, Job, JobType
from forge.domain.status import Status
from forge.errors import InvalidInputError
from forge.jobs.dispatch import Dispatcher
from forge.ports.fakes import MemoryBus
from forge.ports.store import NewRepository
from forge.settings import WorkerSettings
from forge.workflows.workers.runtime import Worker

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store


def _ids(runs: list[Any]) -> set[Any]:
    return {run.id for run in runs}


async def test_claim_execution_keeps_each_repository_within_its_quota(store: Store, repo: str) -> None:
    other, _ = await store.register_repository(NewRepository("acme/other", "https://git.example/acme/other.git"))
    mine = await discovered_runs(store, repo, count=4)
    theirs = await discovered_runs(store, other.name, count=1)

    first = await store.claim_execution(limit=10, claimer="a", lease=30, per_repository=2)
    assert _ids(first) == {mine[0].id, mine[1].id, theirs[0].id}  # the oldest two of each repository
    assert await store.claim_execution(limit=10, claimer="a", lease=30, per_repository=2) == []  # no free place

    await store.set_workflow(mine[0].id, "forge-run-a")  # executing: still takes its place
    assert await store.claim_execution(limit=10, claimer="a", lease=30, per_repository=2) == []
    await store.finish_run(mine[0].id, Status.SUCCESS)  # a place frees up: the oldest waiting run takes it
    assert _ids(await store.claim_execution(limit=10, claimer="a", lease=30, per_repository=2)) == {mine[2].id}
    assert _ids(await store.claim_execution(limit=10, claimer="a", lease=30)) == {
        mine[3].id
    }  # without a quota, nothing waits

    with pytest.raises(InvalidInputError, match="per_repository"):
        await store.claim_execution(limit=1, claimer="a", lease=30, per_repository=-1)


async def test_a_dead_claimers_place_is_freed_when_its_claim_goes_stale(store: Store, repo: str) -> None:
    runs = await discovered_runs(store, repo, count=2)
    assert _ids(await store.claim_execution(limit=10, claimer="a", lease=30, per_repository=1)) == {runs[0].id}
    await asyncio.sleep(0.05)  # the claimer died without recording a workflow
    assert _ids(await store.claim_execution(limit=10, claimer="b", lease=0.01, per_repository=1)) == {runs[0].id}


async def test_concurrent_claimers_never_exceed_the_quota(store: Store, repo: str) -> None:
    runs = await discovered_runs(store, repo, count=5)
    claims = await asyncio.gather(
        *(store.claim_execution(limit=5, claimer=f"c{n}", lease=30, per_repository=2) for n in range(4))
    )
    claimed = [run.id for claim in claims for run in claim]
    assert sorted(claimed) == sorted([runs[0].id, runs[1].id])


async def test_a_worker_process_runs_at_most_concurrency_jobs_at_once() -> None:
    """Eight CI jobs queued at once; ``FORGE_WORKER__CONCURRENCY=3``: three run, the rest wait in the stream."""
    bus = MemoryBus()
    await bus.ensure_streams(STREAMS)
    in_flight, most, release = 0, 0, asyncio.Event()
    three_running = asyncio.Event()

    async def handler(job: Job) -> dict[str, Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 3:
            three_running.set()
        await release.wait()
        in_flight -= 1
        return {"exit_code": 0}

    settings = WorkerSettings(concurrency=3, ack_wait=30.0, heartbeat=5.0, max_deliver=3, fetch_wait=0.02)
    worker = Worker(JobType.CI, handler, bus.connect(), DictObjects(), settings)
    stop = asyncio.Event()
    run_id = uuid4()

    def job(number: int) -> Job:
        payload = CiPayload(
            clone_url="/nonexistent.git",
            phase="test",
            project="app",
            project_path="app",
            step=f"s{number}",
            action="run",
            target="true",
            timeout_seconds=60,
            step_execution_id=uuid4(),
        )
        return Job(
            key=f"ci.{run_id}.s{number}",
            type=JobType.CI,
            run_id=run_id,
            repository="acme/app",
            commit_sha="a" * 40,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=60),
        )

    async with asyncio.TaskGroup() as group, Dispatcher(bus, recheck=0.05) as dispatcher:
        serving = group.create_task(worker.run(stop))
        results = [group.create_task(dispatcher.dispatch(job(n), timeout=30)) for n in range(8)]
        await asyncio.wait_for(three_running.wait(), 10)
        for _ in range(20):  # let the worker pull again: it must not take a fourth job
            await asyncio.sleep(0.01)
        assert (in_flight, most) == (3, 3)
        release.set()
        done = await asyncio.gather(*results)
        stop.set()
        await serving
    assert all(result.success for result in done)
    assert most == 3

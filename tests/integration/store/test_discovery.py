from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import pytest

from forge.domain.discovery import DiscoveredProject, DiscoveryResult, PhaseGroup
from forge.domain.entities import PipelineRun
from forge.domain.status import Status
from forge.errors import ConflictError, NotFoundError
from forge.ports.store import NewRun

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness


def sha(n: int) -> str:
    return f"{n:040x}"


def found(commit: str = sha(0)) -> DiscoveryResult:
    api = DiscoveredProject(name="api", path="services/api", config_blob="0" * 40, phases={}, steps=[])
    return DiscoveryResult(
        commit=commit, base=None, projects=[api], affected=[], phase_groups=[PhaseGroup(group=1, phases=["test"])]
    )


async def make_runs(store: Store, repo: str, count: int) -> list[PipelineRun]:
    return [(await store.create_run(NewRun(repository=repo, commit_sha=sha(n))))[0] for n in range(count)]


async def test_claim_moves_pending_to_running_oldest_first(store: Store, repo: str) -> None:
    runs = await make_runs(store, repo, 3)
    claimed = await store.claim_discovery(limit=2)
    assert [r.id for r in claimed] == [runs[0].id, runs[1].id]
    assert all(r.discovery_status is Status.RUNNING and r.status is Status.RUNNING for r in claimed)
    assert all(r.started_at is not None for r in claimed)
    assert {r.id for r in await store.runs_discovering()} == {runs[0].id, runs[1].id}
    assert [r.id for r in await store.claim_discovery(limit=5)] == [runs[2].id]
    assert await store.claim_discovery(limit=5) == []


async def test_two_concurrent_claimers_never_share_a_run(harness: StoreHarness, store: Store, repo: str) -> None:
    runs = await make_runs(store, repo, 40)
    other = await harness.open()

    async def drain(st: Store) -> list[UUID]:
        got: list[UUID] = []
        while batch := await st.claim_discovery(limit=3):
            got.extend(r.id for r in batch)
            await asyncio.sleep(0)
        return got

    try:
        results = await asyncio.gather(drain(store), drain(other), drain(store), drain(other))
    finally:
        await other.close()
    claimed = [run_id for result in results for run_id in result]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == {r.id for r in runs}


async def test_record_discovery(store: Store, repo: str) -> None:
    (run,) = await make_runs(store, repo, 1)
    with pytest.raises(ConflictError, match="pending to success"):  # not claimed yet
        await store.record_discovery(run.id, found(run.commit_sha), "runs/x/discovery.json")
    await store.claim_discovery(limit=1)

    result = found(run.commit_sha)
    done = await store.record_discovery(run.id, result, "runs/x/discovery.json")
    assert done.discovery_status is Status.SUCCESS
    assert done.discovery == result
    assert done.discovery_key == "runs/x/discovery.json"
    assert done.status is Status.RUNNING
    assert (done.error, done.error_code) == (None, None)
    assert await store.get_run(run.id) == done
    assert await store.runs_discovering() == []

    assert await store.record_discovery(run.id, result, "runs/x/discovery.json") == done  # repeat
    with pytest.raises(ConflictError, match="already recorded"):
        await store.record_discovery(run.id, result, "runs/x/other.json")
    with pytest.raises(ConflictError, match="success to failed"):
        await store.fail_discovery(run.id, "too late", code="invalid_config")


async def test_fail_discovery(store: Store, repo: str) -> None:
    (run,) = await make_runs(store, repo, 1)
    await store.claim_discovery(limit=1)
    failed = await store.fail_discovery(run.id, "invalid .forge/project.yaml", code="invalid_config")
    assert failed.discovery_status is Status.FAILED
    assert failed.status is Status.FAILED
    assert (failed.error, failed.error_code) == ("invalid .forge/project.yaml", "invalid_config")
    assert failed.completed_at is not None
    assert await store.get_run(run.id) == failed
    assert await store.fail_discovery(run.id, "again", code="other") == failed  # repeat: the first error stays
    with pytest.raises(ConflictError, match="failed to success"):
        await store.record_discovery(run.id, found(), "k")
    assert await store.claim_discovery(limit=10) == []


async def test_fail_discovery_of_a_pending_run(store: Store, repo: str) -> None:
    (run,) = await make_runs(store, repo, 1)
    failed = await store.fail_discovery(run.id, "repository unreachable", code="clone_failed")
    assert (failed.status, failed.discovery_status, failed.error_code) == (Status.FAILED, Status.FAILED, "clone_failed")


async def test_discovery_of_unknown_run(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.record_discovery(uuid4(), found(), "k")
    with pytest.raises(NotFoundError):
        await store.fail_discovery(uuid4(), "e", code="x")


async def test_a_run_cancelled_during_discovery_leaves_discovery(store: Store, repo: str) -> None:
    running, waiting = await make_runs(store, repo, 2)
    await store.claim_discovery(limit=1)
    for run in (running, waiting):
        await store.request_cancel(run.id)
        await store.finish_run(run.id, Status.CANCELLED, error="cancelled by request", code="cancelled")
    assert (await store.get_run(running.id)).discovery_status is Status.CANCELLED
    assert (await store.get_run(waiting.id)).error_code == "cancelled"
    assert (await store.get_run(waiting.id)).discovery_status is Status.SKIPPED
    assert await store.runs_discovering() == []
    assert await store.claim_discovery(limit=5) == []
    with pytest.raises(ConflictError):
        await store.record_discovery(running.id, found(), "k")

"""Claim leases, on every store adapter: a claim names its claimer, who renews it while working; a claim not
renewed for the lease is taken over by another claimer, and the former holder's renewal reports it lost. A
claimer that releases its claims hands them back: claimable again at once, while a claim another claimer
took over stays that claimer's.

Time passes with ``harness.age_claims`` (the memory store's clock moves; PostgreSQL's claims move back), so
nothing here waits or depends on how fast it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast
from uuid import UUID, uuid4

import pytest
from tests.integration.store.test_executions import discovered_runs

from forge.errors import InvalidInputError
from forge.ports.store import DeploymentStore, NewDeployment
from forge.testing.releases import new_release

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness

    class DeployStore(Store, DeploymentStore, Protocol):
        """Every store port and the deployment ones."""


LEASE = 30.0
A, B = "controller-a", "controller-b"


async def _pending(store: DeployStore, repo: str, count: int) -> list[UUID]:
    ids = []
    for n in range(1, count + 1):
        release, _ = await store.record_release(new_release(repo, "web", n))
        deployment, _ = await store.request_deployment(NewDeployment(release.id, "dev", "alice", f"deploy {n}"))
        ids.append(deployment.id)
    return ids


async def test_a_renewed_deployment_claim_outlives_the_lease_and_an_unrenewed_one_is_taken_over(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    ds = cast("DeployStore", store)
    renewed, dropped = await _pending(ds, repo, 2)
    assert [d.id for d in await ds.claim_deployments(limit=5, claimer=A, lease=LEASE)] == [renewed, dropped]
    await harness.age_claims(LEASE * 2 / 3)
    assert await ds.renew_deployment_claims([renewed], claimer=A) == {renewed}
    await harness.age_claims(LEASE * 2 / 3)  # renewed within the lease; the other claim is past it

    other = cast("DeployStore", await harness.open())
    try:
        assert [d.id for d in await other.claim_deployments(limit=5, claimer=B, lease=LEASE)] == [dropped]
        # the former holder's renewal reports the claim taken over; the new holder holds it
        assert await ds.renew_deployment_claims([renewed, dropped], claimer=A) == {renewed}
        assert await other.renew_deployment_claims([renewed, dropped], claimer=B) == {dropped}
    finally:
        await other.close()


async def test_a_deployment_claim_past_its_lease_that_nobody_took_is_still_its_claimers(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    ds = cast("DeployStore", store)
    [claimed] = await _pending(ds, repo, 1)
    await ds.claim_deployments(limit=5, claimer=A, lease=LEASE)
    await harness.age_claims(LEASE * 2)
    assert await ds.renew_deployment_claims([claimed], claimer=A) == {claimed}
    assert await ds.claim_deployments(limit=5, claimer=B, lease=LEASE) == []  # renewed just now
    assert await ds.renew_deployment_claims([claimed, uuid4()], claimer=B) == set()  # not B's; no such deployment
    assert await ds.renew_deployment_claims([], claimer=A) == set()


async def test_a_renewed_run_claim_outlives_the_lease_and_an_unrenewed_one_is_taken_over(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    renewed, dropped = (run.id for run in await discovered_runs(store, repo, count=2))
    assert [r.id for r in await store.claim_execution(limit=5, claimer=A, lease=LEASE)] == [renewed, dropped]
    await harness.age_claims(LEASE * 2 / 3)
    assert await store.renew_execution_claims([renewed], claimer=A) == {renewed}
    await harness.age_claims(LEASE * 2 / 3)

    assert [r.id for r in await store.claim_execution(limit=5, claimer=B, lease=LEASE)] == [dropped]
    assert await store.renew_execution_claims([renewed, dropped], claimer=A) == {renewed}
    assert await store.renew_execution_claims([renewed, dropped, uuid4()], claimer=B) == {dropped}


async def test_a_renewed_run_claim_keeps_its_quota_place(harness: StoreHarness, store: Store, repo: str) -> None:
    first, second = (run.id for run in await discovered_runs(store, repo, count=2))
    assert [r.id for r in await store.claim_execution(limit=5, claimer=A, lease=LEASE, per_repository=1)] == [first]
    await harness.age_claims(LEASE * 2 / 3)
    await store.renew_execution_claims([first], claimer=A)
    await harness.age_claims(LEASE * 2 / 3)
    assert await store.claim_execution(limit=5, claimer=B, lease=LEASE, per_repository=1) == []  # no free place
    await harness.age_claims(LEASE)  # A died: its place and its run go to B
    assert [r.id for r in await store.claim_execution(limit=5, claimer=B, lease=LEASE, per_repository=1)] == [first]
    assert second not in await store.renew_execution_claims([first, second], claimer=B)


async def test_a_released_deployment_claim_is_claimable_at_once_by_another_claimer(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    ds = cast("DeployStore", store)
    released, kept = await _pending(ds, repo, 2)
    await ds.claim_deployments(limit=5, claimer=A, lease=LEASE)
    assert await ds.release_deployment_claims([released, uuid4()], claimer=A) == {released}

    other = cast("DeployStore", await harness.open())
    try:  # within A's lease: only the release lets B claim it
        assert [d.id for d in await other.claim_deployments(limit=5, claimer=B, lease=LEASE)] == [released]
        assert await ds.renew_deployment_claims([released, kept], claimer=A) == {kept}
        assert await ds.release_deployment_claims([released], claimer=A) == set()  # B's now: left as it is
        assert await other.renew_deployment_claims([released], claimer=B) == {released}
        assert await ds.release_deployment_claims([], claimer=A) == set()
    finally:
        await other.close()


async def test_releasing_a_deployment_claim_taken_over_leaves_the_new_holders(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    ds = cast("DeployStore", store)
    [claimed] = await _pending(ds, repo, 1)
    await ds.claim_deployments(limit=5, claimer=A, lease=LEASE)
    await harness.age_claims(LEASE * 2)  # A stalled past its lease
    assert [d.id for d in await ds.claim_deployments(limit=5, claimer=B, lease=LEASE)] == [claimed]
    assert await ds.release_deployment_claims([claimed], claimer=A) == set()
    assert await ds.claim_deployments(limit=5, claimer=A, lease=LEASE) == []  # B's claim is whole
    assert await ds.renew_deployment_claims([claimed], claimer=B) == {claimed}


async def test_a_released_run_claim_is_claimable_at_once_and_frees_its_quota_place(store: Store, repo: str) -> None:
    first, second = (run.id for run in await discovered_runs(store, repo, count=2))
    assert [r.id for r in await store.claim_execution(limit=5, claimer=A, lease=LEASE, per_repository=1)] == [first]
    assert await store.claim_execution(limit=5, claimer=B, lease=LEASE, per_repository=1) == []  # no free place
    assert await store.release_execution_claims([first, second, uuid4()], claimer=A) == {first}
    # within A's lease: only the release lets B claim it (the oldest ready run takes the place)
    assert [r.id for r in await store.claim_execution(limit=5, claimer=B, lease=LEASE, per_repository=1)] == [first]
    assert await store.renew_execution_claims([first], claimer=A) == set()
    assert await store.release_execution_claims([first], claimer=A) == set()  # B's now: left as it is
    assert await store.renew_execution_claims([first], claimer=B) == {first}
    assert await store.release_execution_claims([], claimer=A) == set()


async def test_releasing_a_run_claim_taken_over_leaves_the_new_holders(
    harness: StoreHarness, store: Store, repo: str
) -> None:
    [claimed] = (run.id for run in await discovered_runs(store, repo, count=1))
    await store.claim_execution(limit=5, claimer=A, lease=LEASE)
    await harness.age_claims(LEASE * 2)  # A stalled past its lease
    assert [r.id for r in await store.claim_execution(limit=5, claimer=B, lease=LEASE)] == [claimed]
    assert await store.release_execution_claims([claimed], claimer=A) == set()
    assert await store.claim_execution(limit=5, claimer=A, lease=LEASE) == []  # B's claim is whole
    assert await store.renew_execution_claims([claimed], claimer=B) == {claimed}


@pytest.mark.parametrize("claimer", ["", "x" * 257, "nul\x00"])
async def test_a_claimer_is_a_name(store: Store, claimer: str) -> None:
    ds = cast("DeployStore", store)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await store.claim_execution(limit=1, claimer=claimer, lease=LEASE)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await store.renew_execution_claims([uuid4()], claimer=claimer)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await ds.claim_deployments(limit=1, claimer=claimer, lease=LEASE)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await ds.renew_deployment_claims([uuid4()], claimer=claimer)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await store.release_execution_claims([uuid4()], claimer=claimer)
    with pytest.raises(InvalidInputError, match="claimer must be 1-256 characters"):
        await ds.release_deployment_claims([uuid4()], claimer=claimer)


@pytest.mark.parametrize("lease", [0.0, -1.0])
async def test_a_lease_is_positive(store: Store, lease: float) -> None:
    with pytest.raises(InvalidInputError, match="lease must be positive"):
        await store.claim_execution(limit=1, claimer=A, lease=lease)
    with pytest.raises(InvalidInputError, match="lease must be positive"):
        await cast("DeployStore", store).claim_deployments(limit=1, claimer=A, lease=lease)

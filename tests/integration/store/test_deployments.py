"""DeploymentStore and ApprovalStore compliance: every test runs against the memory store and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, cast
from uuid import UUID, uuid4

import asyncpg
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.entities import Release, Trigger
from forge.domain.status import ApprovalStatus, DeploymentStatus
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.fakes import MemoryStore
from forge.ports.store import ApprovalStore, DeploymentStore, NewApproval, NewDeployment, NewRelease, NewRepository

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness

    class DeployStore(Store, DeploymentStore, ApprovalStore, Protocol):
        """Every store port and the deployment ones."""


COMMIT = "c0" * 20


def _sha(n: int) -> str:
    return f"{n:040x}"


async def _release(store: DeployStore, repo: str, n: int, project: str = "web") -> Release:
    release, _ = await store.record_release(
        NewRelease(
            repository=repo,
            project=project,
            commit_sha=_sha(n),
            oci_ref=f"registry.test/{repo}/{project}:sha-{_sha(n)}",
            oci_digest="sha256:" + f"{n:02x}" * 32,
            trigger=Trigger.PUSH,
            created_by="controller",
            branch="main",
        )
    )
    return release


def _ask(release: Release, env: str = "dev") -> NewDeployment:
    return NewDeployment(release_id=release.id, environment=env, requested_by="alice", reason="ship it")


@pytest.fixture
def ds(store: Store) -> DeployStore:
    return cast("DeployStore", store)


async def test_a_request_is_pending_and_asking_again_returns_it(ds: DeployStore, repo: str) -> None:
    release = await _release(ds, repo, 1)
    first, created = await ds.request_deployment(_ask(release))
    assert created is True
    assert (first.status, first.environment, first.repository, first.project) == ("pending", "dev", repo, "web")
    assert (first.release_number, first.commit_sha, first.oci_digest) == (1, _sha(1), release.oci_digest)
    assert (first.deployed_by, first.reason, first.gitops_commit, first.error) == ("alice", "ship it", None, None)
    again, created_again = await ds.request_deployment(_ask(release))
    assert (again, created_again) == (first, False)
    other, created_other = await ds.request_deployment(_ask(release, "staging"))
    assert created_other is True
    assert other.id != first.id
    assert await ds.get_deployment(first.id) == first


async def test_activating_supersedes_the_previous_active_one(ds: DeployStore, repo: str) -> None:
    one, two = await _release(ds, repo, 1), await _release(ds, repo, 2)
    first, _ = await ds.request_deployment(_ask(one))
    active = await ds.complete_deployment(first.id, "a" * 40)
    assert (active.status, active.gitops_commit) == (DeploymentStatus.ACTIVE, "a" * 40)
    assert active.completed_at is not None
    assert await ds.complete_deployment(first.id, "a" * 40) == active  # a repeat is a no-op
    again, created = await ds.request_deployment(_ask(one))  # active already: returned
    assert (again.id, created) == (first.id, False)
    second, _ = await ds.request_deployment(_ask(two))
    await ds.complete_deployment(second.id, "b" * 40)
    assert (await ds.get_deployment(first.id)).status is DeploymentStatus.SUPERSEDED
    current = await ds.active_deployment("dev", repo, "web")
    assert (current.id, current.release_number) == (second.id, 2)
    history = await ds.deployment_history("dev", repo, "web", limit=10, offset=0)
    assert [(d.release_number, d.status) for d in history.items] == [(2, "active"), (1, "superseded")]
    assert history.total == 2
    assert (await ds.deployment_history("dev", repo, "web", limit=1, offset=5)).total == 2
    rollback, created = await ds.request_deployment(_ask(one))  # a superseded release can be asked for again
    assert created is True
    assert rollback.id != first.id
    with pytest.raises(ConflictError, match="already superseded"):
        await ds.complete_deployment(first.id, "c" * 40)


async def test_a_failure_leaves_the_active_deployment_active(ds: DeployStore, repo: str) -> None:
    one, two = await _release(ds, repo, 1), await _release(ds, repo, 2)
    first, _ = await ds.request_deployment(_ask(one))
    await ds.complete_deployment(first.id, "a" * 40)
    second, _ = await ds.request_deployment(_ask(two))
    failed = await ds.fail_deployment(second.id, "gitops remote down")
    assert (failed.status, failed.error) == (DeploymentStatus.FAILED, "gitops remote down")
    assert await ds.fail_deployment(second.id, "other") == failed
    assert (await ds.active_deployment("dev", repo, "web")).id == first.id
    with pytest.raises(ConflictError, match="already failed"):
        await ds.complete_deployment(second.id, "b" * 40)
    with pytest.raises(ConflictError, match="already active"):
        await ds.fail_deployment(first.id, "late")


async def test_refusals(ds: DeployStore, repo: str) -> None:
    release = await _release(ds, repo, 1)
    with pytest.raises(NotFoundError, match="does not exist"):
        await ds.request_deployment(NewDeployment(release_id=_uuid(), environment="dev", requested_by="a", reason="r"))
    with pytest.raises(InvalidInputError, match="environment must match"):
        await ds.request_deployment(_ask(release, "Prod"))
    with pytest.raises(InvalidInputError, match="reason must be"):
        await ds.request_deployment(NewDeployment(release.id, "dev", requested_by="a", reason="  "))
    with pytest.raises(NotFoundError, match="no active deployment"):
        await ds.active_deployment("dev", repo, "web")
    with pytest.raises(NotFoundError):
        await ds.get_deployment(_uuid())
    with pytest.raises(NotFoundError):
        await ds.complete_deployment(_uuid(), "a" * 40)
    assert (await ds.deployment_history("dev", "no/such", "web", limit=5, offset=0)).total == 0


async def test_claims_hand_each_pending_deployment_to_one_caller(
    harness: StoreHarness, ds: DeployStore, repo: str
) -> None:
    one, two = await _release(ds, repo, 1), await _release(ds, repo, 2, project="api")
    first, _ = await ds.request_deployment(_ask(one))
    second, _ = await ds.request_deployment(_ask(two))
    other = cast("DeployStore", await harness.open())
    try:
        claims = await asyncio.gather(
            ds.claim_deployments(limit=5, claimer="a", lease=30),
            other.claim_deployments(limit=5, claimer="b", lease=30),
        )
    finally:
        await other.close()
    claimed = [d.id for batch in claims for d in batch]
    assert sorted(claimed) == sorted([first.id, second.id])
    assert await ds.claim_deployments(limit=5, claimer="c", lease=30) == []  # claimed, not stale
    await ds.complete_deployment(first.id, "a" * 40)
    assert [d.id for d in await ds.claim_deployments(limit=5, claimer="c", lease=3600)] == []


async def test_the_deployment_lock_has_one_holder_at_a_time(harness: StoreHarness, ds: DeployStore) -> None:
    other = cast("DeployStore", await harness.open())
    order: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with ds.deployment_lock("dev", "acme/app", "web"):
            order.append("first in")
            held.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await held.wait()
        async with other.deployment_lock("dev", "acme/app", "web"):
            order.append("second in")

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(first())
            waiting = group.create_task(second())
            await held.wait()
            # another app's lock is free while this one is held
            async with ds.deployment_lock("dev", "acme/app", "api"):
                order.append("api")
            assert not waiting.done()
            release.set()
    finally:
        await other.close()
    assert order == ["first in", "api", "first out", "second in"]


async def test_releases_to_deploy_until_marked(ds: DeployStore, repo: str) -> None:
    one, two = await _release(ds, repo, 1), await _release(ds, repo, 2)
    assert [r.id for r in await ds.releases_to_deploy(limit=10)] == [one.id, two.id]
    await ds.mark_deploys_planned(one.id)
    await ds.mark_deploys_planned(one.id)
    assert [r.id for r in await ds.releases_to_deploy(limit=10)] == [two.id]
    with pytest.raises(NotFoundError):
        await ds.mark_deploys_planned(_uuid())


async def test_approvals_are_created_found_and_revoked(ds: DeployStore, repo: str) -> None:
    release = await _release(ds, repo, 1)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await ds.active_approval(release.id, "staging") is None
    short = await ds.create_approval(NewApproval(release.id, "staging", "bob", "tested in dev", later))
    long = await ds.create_approval(NewApproval(release.id, "staging", "bob", "again", later + timedelta(hours=1)))
    assert (short.status, short.repository, short.project, short.release_number) == ("active", repo, "web", 1)
    assert (short.approver, short.justification, short.revoked_by) == ("bob", "tested in dev", None)
    assert await ds.active_approval(release.id, "staging") == long  # the one that lasts longest
    assert await ds.active_approval(release.id, "production") is None
    revoked = await ds.revoke_approval(long.id, "carol")
    assert (revoked.status, revoked.revoked_by) == (ApprovalStatus.REVOKED, "carol")
    assert await ds.revoke_approval(long.id, "dave") == revoked
    assert await ds.active_approval(release.id, "staging") == short
    assert await ds.get_approval(short.id) == short
    with pytest.raises(InvalidInputError, match="expires_at must be in the future"):
        await ds.create_approval(NewApproval(release.id, "staging", "bob", "late", datetime.now(UTC) - timedelta(1)))
    with pytest.raises(InvalidInputError, match="justification must be"):
        await ds.create_approval(NewApproval(release.id, "staging", "bob", " ", later))
    with pytest.raises(NotFoundError):
        await ds.create_approval(NewApproval(_uuid(), "staging", "bob", "why", later))
    with pytest.raises(NotFoundError):
        await ds.revoke_approval(_uuid(), "carol")


async def test_an_approval_reads_expired_once_its_time_passed_memory() -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = MemoryStore(clock=lambda: now[0])

    def expire() -> None:
        now[0] += timedelta(hours=2)

    await _expires(cast("DeployStore", store), expire, now[0])


async def test_an_approval_reads_expired_once_its_time_passed_postgres(pg_store: PostgresStore, dsn: str) -> None:
    async def expire() -> None:  # PostgreSQL's now() cannot be moved: move the approval
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE approvals SET expires_at = now() - interval '1 second'")
        finally:
            await conn.close()

    await _expires(cast("DeployStore", pg_store), expire, datetime.now(UTC))


async def _expires(store: DeployStore, expire: Callable[[], Awaitable[None] | None], now: datetime) -> None:
    await store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    release = await _release(store, "acme/app", 1)
    approval = await store.create_approval(NewApproval(release.id, "prod", "bob", "why", now + timedelta(hours=1)))
    result = expire()
    if result is not None:
        await result
    assert (await store.get_approval(approval.id)).status is ApprovalStatus.EXPIRED
    assert await store.active_approval(release.id, "prod") is None
    with pytest.raises(ConflictError, match="expired"):
        await store.revoke_approval(approval.id, "carol")


def _uuid() -> UUID:
    return uuid4()

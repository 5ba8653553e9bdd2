"""Claim leases in the DeploymentReconciler: two controllers on one store and one GitOps repository on disk.

A controller that dies holding a claim leaves the deployment to another one after the lease; one that stops
cleanly (its stop event set, then cancelled as after the grace period) hands its claims back, so another one
deploys at once; a controller that works on a deployment renews its claim, so nobody takes it over; and one
whose claim was taken over anyway (it stalled past its lease) writes nothing for it. Each controller has its
own store connection; a dying one loses it first, so it hands nothing back. The memory store runs on a clock
the test moves, so the lease passes without waiting; PostgreSQL's claims age on its own clock, in a lease of
a fraction of a second that the test polls through (no sleep as long as the lease, no assertion on timing).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pygit2
import pytest
import stamina
from tests.unit.controller.support import until

from forge.adapters.postgres_store import PostgresStore
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.entities import Deployment
from forge.domain.status import DeploymentStatus
from forge.embedded.gitops import create_gitops_repository
from forge.embedded.process import ServiceProcess
from forge.errors import ServiceUnavailableError, TransientError
from forge.gitops import ApplicationDefaults, GitOpsWriter
from forge.ports import RepositoryStore, RunStore
from forge.ports.fakes import MemoryStore
from forge.ports.gitops import GitOpsCommit, GitOpsEdit, GitOpsFiles, GitOpsRepository, GitOpsTree, PathRevision
from forge.ports.store import (
    ApprovalStore,
    Database,
    DeploymentStore,
    NewDeployment,
    NewRepository,
    ReleaseStore,
)
from forge.testing.postgres import create_database_async
from forge.testing.releases import new_release

REPO = "acme/shop"
DEFAULTS = ApplicationDefaults(repo_url="https://git.example/gitops.git")
#: A lease the test waits through on PostgreSQL's clock (its renewals come every third of it).
SHORT_LEASE = 0.3
#: A lease whose renewals (every 100 s) never come within a test: the memory store's clock alone says when it ends.
LONG_LEASE = 300.0
#: A lease no test outlives on any clock: a deployment taken over under it was handed back.
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


class Store(Database, RepositoryStore, RunStore, ReleaseStore, DeploymentStore, ApprovalStore, Protocol):
    """What a controller's deployment reconciler uses: MemoryStore or PostgresStore."""


class Clock:
    """The memory store's clock: still until the test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Platform:
    store: Store
    remote: Path
    tmp: Path
    clock: Clock | None  # the memory store's; None: PostgreSQL's own
    dsn: str | None = None  # PostgreSQL's database; None: the memory store
    connections: dict[str, Store] = field(default_factory=dict)

    async def controller(
        self, name: str, *, lease: float, remote: Callable[[Pygit2GitOps], GitOpsRepository] | None = None
    ) -> DeploymentReconciler:
        """One controller process: its own store connection and work copy (through ``remote``, a wrapper of
        the real adapter)."""
        repository: GitOpsRepository = Pygit2GitOps(str(self.remote), self.tmp / name)
        if remote is not None:
            repository = remote(Pygit2GitOps(str(self.remote), self.tmp / name))
        if self.dsn is None:
            assert isinstance(self.store, MemoryStore)
            store: Store = self.store.connect()
        else:
            store = await PostgresStore.connect(self.dsn, min_size=1, max_size=5)
        self.connections[name] = store
        return DeploymentReconciler(
            deployments=store,
            approvals=store,
            releases=store,
            runs=store,
            writer=GitOpsWriter(repository, DEFAULTS),
            claim_lease=lease,
        )

    async def kill(self, name: str, task: asyncio.Task[Any]) -> None:
        """Controller ``name``'s process dies while ``task`` works: its store connection goes first (nothing it
        does afterwards reaches the store: it hands nothing back), then its work stops."""
        closing = asyncio.ensure_future(self.connections[name].close())  # PostgreSQL's waits for A's lock
        await asyncio.sleep(0)  # closed to new work before the task runs again
        task.cancel()
        await asyncio.wait([task, closing])

    async def close(self) -> None:
        for store in self.connections.values():
            await store.close()

    async def ask(self, n: int = 1) -> Deployment:
        release, _ = await self.store.record_release(new_release(REPO, "app", n))
        deployment, _ = await self.store.request_deployment(NewDeployment(release.id, "dev", "alice", f"deploy {n}"))
        return deployment

    def commits(self) -> int:
        repo = pygit2.Repository(str(self.remote))
        return sum(1 for _ in repo.walk(repo.revparse_single("refs/heads/main").id))

    def head(self) -> str:
        return str(pygit2.Repository(str(self.remote)).revparse_single("refs/heads/main").id)


@pytest.fixture(params=["memory", "postgres"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Clock | None, str | None]]:
    """The store both controllers share; the clock the test moves (memory) or none (PostgreSQL's own); and
    PostgreSQL's database, which each controller connects to on its own."""
    if request.param == "memory":
        clock = Clock()
        yield MemoryStore(clock=clock), clock, None
        return
    server: ServiceProcess = request.getfixturevalue("postgres_server")
    dsn = await create_database_async(server.url, f"t_{uuid.uuid4().hex[:16]}")
    store = await PostgresStore.connect(dsn, min_size=1, max_size=5)
    await store.migrate()
    yield store, None, dsn
    await store.close()


@pytest.fixture
async def platform(shared: tuple[Store, Clock | None, str | None], tmp_path: Path) -> AsyncIterator[Platform]:
    store, clock, dsn = shared
    await store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    p = Platform(store, Path(create_gitops_repository(tmp_path / "gitops.git")), tmp_path, clock, dsn)
    yield p
    await p.close()


class _Remote:
    """The real adapter behind a wrapper (GitOpsRepository): what a controller's GitOps remote does is scripted."""

    def __init__(self, inner: Pygit2GitOps) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.updates = 0

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def branch(self) -> str:
        return self.inner.branch

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        self.updates += 1
        return await self.inner.update(plan)

    async def read(self, paths: Sequence[str]) -> GitOpsFiles:
        return await self.inner.read(paths)

    async def history(self, path: str, *, limit: int = 50) -> list[PathRevision]:
        return await self.inner.history(path, limit=limit)


class _DiesAfterPush(_Remote):
    """Pushes the pointer commit, then its controller dies (before recording it): ``update`` never returns."""

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        await super().update(plan)
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class _Stalls(_Remote):
    """The remote holds the push until ``go``, then the push fails (a transient error) or succeeds (``fail``)."""

    def __init__(self, inner: Pygit2GitOps, *, fail: bool) -> None:
        super().__init__(inner)
        self.fail = fail

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        self.entered.set()
        await self.go.wait()
        if self.fail:
            self.updates += 1
            raise TransientError("the GitOps remote is unavailable")
        return await super().update(plan)


async def test_a_deployment_whose_controller_died_is_deployed_by_another_after_the_lease(platform: Platform) -> None:
    p = platform
    lease = SHORT_LEASE if p.clock is None else LONG_LEASE
    before = p.commits()
    asked = await p.ask()
    dying = _DiesAfterPush(Pygit2GitOps(str(p.remote), p.tmp / "a"))
    a = await p.controller("a", lease=lease, remote=lambda _: dying)
    stop = asyncio.Event()
    running = asyncio.create_task(a.run(stop))
    async with asyncio.timeout(30):
        await dying.entered.wait()  # the pointer is pushed; nothing is recorded
    await p.kill("a", running)  # controller A dies: its claim is not released
    assert (await p.store.get_deployment(asked.id)).status is DeploymentStatus.PENDING

    b = await p.controller("b", lease=lease)
    if p.clock is not None:
        assert await b.deploy_pending() == []  # a dead controller hands nothing back: its claim holds its lease
        p.clock.advance(lease * 1.5)
    done: list[Deployment] = []

    async def deployed() -> bool:
        done.extend(await b.deploy_pending())
        return bool(done)

    await until(deployed, within=30)
    assert [(d.id, d.status, d.gitops_commit) for d in done] == [(asked.id, DeploymentStatus.ACTIVE, p.head())]
    assert p.commits() == before + 1  # exactly one pointer commit: A's, found at the digest by B and recorded


@pytest.mark.parametrize("pushed", [False, True], ids=["before-its-push", "after-its-push"])
async def test_a_controller_that_stops_cleanly_hands_its_deployment_to_the_next_at_once(
    platform: Platform, pushed: bool
) -> None:
    p = platform
    before = p.commits()
    asked = await p.ask()
    work = Pygit2GitOps(str(p.remote), p.tmp / "a")
    hung: _Remote = _DiesAfterPush(work) if pushed else _Stalls(work, fail=False)  # the push hangs
    a = await p.controller("a", lease=HOUR, remote=lambda _: hung)
    stop = asyncio.Event()
    running = asyncio.create_task(a.run(stop))
    async with asyncio.timeout(30):
        await hung.entered.wait()
    stop.set()  # SIGTERM (or leadership lost): A's hung push keeps it in its tick until the grace period ends
    running.cancel()  # and run_service cancels it
    await asyncio.wait([running])
    assert running.cancelled()

    b = await p.controller("b", lease=HOUR)
    async with asyncio.timeout(30):
        done = await b.deploy_pending()  # no clock moved and the lease is an hour: A handed its claim back
    assert [(d.id, d.status, d.gitops_commit) for d in done] == [(asked.id, DeploymentStatus.ACTIVE, p.head())]
    assert p.commits() == before + 1  # one pointer commit: B's, or A's found at the digest by B


async def test_a_stopping_controller_hands_back_the_deployments_it_held_through_a_store_outage(
    tmp_path: Path,
) -> None:
    clock = Clock()
    p = Platform(MemoryStore(clock=clock), Path(create_gitops_repository(tmp_path / "gitops.git")), tmp_path, clock)
    await p.store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    before = p.commits()
    first, second = await p.ask(1), await p.ask(2)
    slow = _Stalls(Pygit2GitOps(str(p.remote), tmp_path / "a"), fail=False)
    a = await p.controller("a", lease=HOUR, remote=lambda _: slow)
    b = await p.controller("b", lease=HOUR)
    deploying = asyncio.create_task(a.deploy_pending())  # A claims both and pushes the first
    async with asyncio.timeout(30):
        await slow.entered.wait()
    assert isinstance(p.store, MemoryStore)
    p.store.available = False  # PostgreSQL goes away: A cannot record the first, nor hand anything back
    slow.go.set()
    with pytest.raises(ServiceUnavailableError):
        await deploying
    p.store.available = True
    assert await b.deploy_pending() == []  # both are still A's: held for its next tick

    stop = asyncio.Event()
    stop.set()
    await a.run(stop)  # A stops before its next tick: it hands back what it held

    async with asyncio.timeout(30):
        done = await b.deploy_pending()
    assert [(d.id, d.status) for d in done] == [(first.id, "active"), (second.id, "active")]
    assert p.commits() == before + 2  # A's pointer for the first, found at the digest by B; B's for the second


async def test_a_controller_renews_its_claim_through_a_long_deploy(tmp_path: Path) -> None:
    clock = Clock()
    p = Platform(MemoryStore(clock=clock), Path(create_gitops_repository(tmp_path / "gitops.git")), tmp_path, clock)
    await p.store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    before = p.commits()
    asked = await p.ask()
    slow = _Stalls(Pygit2GitOps(str(p.remote), tmp_path / "a"), fail=False)
    a = await p.controller("a", lease=SHORT_LEASE, remote=lambda _: slow)
    b = await p.controller("b", lease=SHORT_LEASE)
    deploying = asyncio.create_task(a.deploy_pending())
    async with asyncio.timeout(30):
        await slow.entered.wait()
    for _ in range(4):  # two leases pass on the store's clock while A's push hangs
        clock.advance(SHORT_LEASE / 2)
        seen = (await p.store.get_deployment(asked.id)).updated_at

        async def renewed(seen: datetime = seen) -> bool:  # A renews its claim (a write stamps the row)
            return (await p.store.get_deployment(asked.id)).updated_at > seen

        await until(renewed, task=deploying)
        async with asyncio.timeout(30):
            assert await b.deploy_pending() == []  # A's claim is fresh: B takes nothing
    slow.go.set()
    [done] = await deploying
    assert (done.id, done.status, done.gitops_commit) == (asked.id, DeploymentStatus.ACTIVE, p.head())
    assert p.commits() == before + 1


async def test_a_controller_whose_claim_was_taken_over_writes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    p = Platform(MemoryStore(clock=clock), Path(create_gitops_repository(tmp_path / "gitops.git")), tmp_path, clock)
    await p.store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    before = p.commits()
    asked = await p.ask()
    down = _Stalls(Pygit2GitOps(str(p.remote), tmp_path / "a"), fail=True)
    a = await p.controller("a", lease=LONG_LEASE, remote=lambda _: down)
    b = await p.controller("b", lease=LONG_LEASE)
    stalled = asyncio.create_task(a.deploy_pending())
    async with asyncio.timeout(30):
        await down.entered.wait()  # A holds the app's lock, its push hangs, and it renews nothing
    clock.advance(LONG_LEASE * 1.5)
    taking_over = asyncio.create_task(b.deploy_pending())  # B claims it, then waits for the app's lock

    async def claimed_by_b() -> bool:
        return await p.store.renew_deployment_claims([asked.id], claimer=b.claimer) == {asked.id}

    await until(claimed_by_b, task=taking_over)
    down.go.set()  # A's push fails; its retry finds the claim taken over and stops
    async with asyncio.timeout(30):
        assert await stalled == []
        [done] = await taking_over
    assert down.updates == 1  # A tried no second push, and recorded nothing: B's deployment is active
    assert (done.id, done.status, done.error, done.gitops_commit) == (asked.id, "active", None, p.head())
    assert p.commits() == before + 1

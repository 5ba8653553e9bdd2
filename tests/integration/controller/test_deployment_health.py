"""Argo CD health decides when a deployment is active: the DeploymentReconciler on the memory store, a real
GitOps repository on disk, and a real HTTP server serving Argo CD Application objects the way the Kubernetes
API does (tests/integration/k8s/support.py). Time is an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest
import stamina
from pydantic import SecretStr
from tests.integration.k8s.support import TOKEN, FakeKube, application

from forge.adapters.k8s_argocd import ArgoCDApplications
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployment_health import DeploymentHealth
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.entities import Deployment, Release
from forge.domain.status import DeploymentStatus
from forge.embedded.gitops import create_gitops_repository
from forge.gitops import ApplicationDefaults, GitOpsWriter
from forge.ports.fakes import MemoryStore
from forge.ports.gitops import GitOpsEdit
from forge.ports.store import NewDeployment, NewRepository
from forge.settings import ArgoCDSettings
from forge.testing.releases import new_release

REPO = "acme/shop"
APP = "acme-shop-app"  # the Application of (dev, acme/shop, app)
TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.start()
    yield fake
    fake.close()


@dataclass
class Setup:
    store: MemoryStore
    remote: Path
    kube: FakeKube
    reconciler: DeploymentReconciler
    now: list[float]
    wall: list[datetime]
    """The store's clock (claims go stale by it); ``now`` is the health follower's."""
    other_writer: Pygit2GitOps

    def head(self) -> str:
        return str(pygit2.Repository(str(self.remote)).revparse_single("refs/heads/main").id)

    def argo(self, **status: object) -> None:
        """The Application as Argo CD would have recorded it now."""
        self.kube.put_application(application(APP, **status))  # type: ignore[arg-type]

    async def another_apps_commit(self) -> str:
        edit = GitOpsEdit({"dev/apps/acme/shop/other/release.yaml": b"kind: ReleasePointer\n"}, "another app")
        sha = (await self.other_writer.update(lambda _tree: edit)).sha
        assert sha is not None
        return sha

    async def follow(self) -> list[Deployment]:
        assert self.reconciler.health is not None
        return await self.reconciler.health.follow()

    async def status(self, deployment: Deployment) -> DeploymentStatus:
        return (await self.store.get_deployment(deployment.id)).status


@pytest.fixture
async def setup(tmp_path: Path, kube: FakeKube) -> AsyncIterator[Setup]:
    wall = [datetime(2025, 5, 1, 12, 0, tzinfo=UTC)]
    store = MemoryStore(clock=lambda: wall[0])
    await store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    remote = Path(create_gitops_repository(tmp_path / "gitops.git"))
    writer = GitOpsWriter(
        Pygit2GitOps(str(remote), tmp_path / "work"), ApplicationDefaults(repo_url="https://git.example/gitops.git")
    )
    now = [1000.0]
    argocd = ArgoCDApplications.from_settings(
        ArgoCDSettings(enabled=True, server=kube.url, token=SecretStr(TOKEN), request_timeout=5)
    )
    health = DeploymentHealth(
        deployments=store,
        deployer=argocd,
        revisions=Pygit2GitOps(str(remote), tmp_path / "controller"),
        timeout=TIMEOUT,
        poll=0,
        clock=lambda: now[0],
    )
    reconciler = DeploymentReconciler(
        deployments=store, approvals=store, releases=store, runs=store, writer=writer, deploy_timeout=5, health=health
    )
    yield Setup(store, remote, kube, reconciler, now, wall, Pygit2GitOps(str(remote), tmp_path / "other"))
    await argocd.close()


async def _written(s: Setup, n: int) -> tuple[Deployment, str]:
    """Release ``n`` of ``app`` asked for dev and its pointer written: the pending deployment and its commit."""
    release: Release
    release, _ = await s.store.record_release(new_release(REPO, "app", n))
    await s.store.request_deployment(NewDeployment(release.id, "dev", "alice", f"deploy {n}"))
    [pending] = await s.reconciler.deploy_pending()
    assert pending.status is DeploymentStatus.PENDING  # written, not active: Argo CD decides
    return pending, s.head()


async def _active(s: Setup, n: int) -> Deployment:
    _deployment, commit = await _written(s, n)
    s.argo(revision=commit)
    [done] = await s.follow()
    assert done.status is DeploymentStatus.ACTIVE
    return done


async def test_synced_and_healthy_at_the_commit_is_active_and_supersedes_only_then(setup: Setup) -> None:
    s = setup
    first = await _active(s, 1)
    assert first.gitops_commit is not None
    second, commit = await _written(s, 2)
    assert (await s.follow()) == []  # the Application still shows release 1's commit
    assert (await s.store.active_deployment("dev", REPO, "app")).id == first.id
    s.argo(revision=commit)
    [done] = await s.follow()
    assert (done.id, done.status, done.gitops_commit) == (second.id, DeploymentStatus.ACTIVE, commit)
    assert await s.status(first) is DeploymentStatus.SUPERSEDED


async def test_progressing_then_healthy_and_never_written_twice(setup: Setup) -> None:
    s = setup
    _deployment, commit = await _written(s, 1)
    await s.follow()  # no Application yet: the app-of-apps creates it after the commit
    s.argo(revision=commit, health="Progressing", health_message="Waiting for rollout to finish", phase="Running")
    assert await s.follow() == []
    s.wall[0] += timedelta(seconds=301)  # its claim is stale: claimed again, but it is followed, not rewritten
    assert await s.reconciler.deploy_pending() == []
    assert s.head() == commit
    s.argo(revision=commit)
    [done] = await s.follow()
    assert done.status is DeploymentStatus.ACTIVE


async def test_degraded_fails_with_argo_cds_messages_and_keeps_the_active_one(setup: Setup) -> None:
    s = setup
    first = await _active(s, 1)
    second, commit = await _written(s, 2)
    s.argo(
        revision=commit,
        health="Degraded",
        health_message='Deployment "web" exceeded its progress deadline',
        operation_message="successfully synced (all tasks run)",
    )
    [failed] = await s.follow()
    assert (failed.id, failed.status) == (second.id, DeploymentStatus.FAILED)
    assert failed.error == (
        f'Argo CD Application {APP} is Degraded at {commit[:12]}: Deployment "web" exceeded its progress '
        "deadline; last sync Succeeded: successfully synced (all tasks run)"
    )
    assert (await s.store.active_deployment("dev", REPO, "app")).id == first.id


async def test_a_failed_sync_of_the_commit_fails_it(setup: Setup) -> None:
    s = setup
    _deployment, commit = await _written(s, 1)
    s.argo(
        sync="OutOfSync",
        revision=commit,
        health="Missing",
        phase="Failed",
        operation_message='one or more objects failed to apply, reason: Deployment.apps "web" is invalid',
    )
    [failed] = await s.follow()
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error is not None
    assert f"the sync of {commit[:12]} failed: one or more objects failed to apply" in failed.error


async def test_an_older_revision_is_not_yet_and_a_later_one_of_another_app_counts(setup: Setup) -> None:
    s = setup
    before = s.head()
    deployment, commit = await _written(s, 1)
    s.argo(sync="OutOfSync", revision=before, operation_revision=before)
    assert await s.follow() == []
    s.argo(revision=before)  # Synced and Healthy, but at a revision without the pointer
    assert await s.follow() == []
    assert await s.status(deployment) is DeploymentStatus.PENDING
    later = await s.another_apps_commit()  # Argo CD reports the branch head it compared with
    s.argo(revision=later)
    [done] = await s.follow()
    assert (done.status, done.gitops_commit) == (DeploymentStatus.ACTIVE, commit)


async def test_no_verdict_within_the_timeout_fails_with_what_was_seen_last(setup: Setup) -> None:
    s = setup
    first = await _active(s, 1)
    _second, commit = await _written(s, 2)
    s.argo(sync="OutOfSync", revision=first.gitops_commit)
    s.wall[0] += timedelta(seconds=TIMEOUT - 1)  # the timeout runs from the commit the store recorded
    assert await s.follow() == []
    s.wall[0] += timedelta(seconds=2)  # past it (the store's clock also ticks a microsecond per write)
    [failed] = await s.follow()
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error == (
        f"not Synced and Healthy at a revision containing GitOps commit {commit[:12]} within 60 s; last seen: "
        f"Argo CD Application {APP}: OutOfSync at {str(first.gitops_commit)[:12]}, health Healthy "
        "(the pointer commit is not synced yet)"
    )
    assert (await s.store.active_deployment("dev", REPO, "app")).id == first.id


async def test_an_api_server_away_is_retried(setup: Setup) -> None:
    s = setup
    deployment, commit = await _written(s, 1)
    s.argo(revision=commit)
    s.kube.down = True
    assert await s.follow() == []
    s.kube.down = False
    s.kube.outage.fail_next(1)
    assert await s.follow() == []
    assert await s.status(deployment) is DeploymentStatus.PENDING
    [done] = await s.follow()
    assert done.status is DeploymentStatus.ACTIVE
    assert s.kube.outage.failed == 1


async def test_forbidden_fails_with_the_cause(setup: Setup) -> None:
    s = setup
    _deployment, _ = await _written(s, 1)
    s.kube.forbidden = True
    [failed] = await s.follow()
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"Argo CD Application {APP} cannot be read: kubernetes http://127.0.0.1:")
    assert 'cannot get resource "applications" in API group "argoproj.io" in the namespace "argocd"' in failed.error


async def test_the_poll_interval_spaces_the_reads(setup: Setup) -> None:
    s = setup
    assert s.reconciler.health is not None
    s.reconciler.health.poll = 5
    await _written(s, 1)
    await s.follow()
    await s.follow()
    assert len(s.kube.requests) == 1
    s.now[0] += 5
    await s.follow()
    assert len(s.kube.requests) == 2

"""Argo CD health survives a controller restart: the watch list is the PostgreSQL store's (committed pending
deployments), so a new reconciler follows a deployment at once instead of after its claim's lease (30 s).

Real PostgreSQL (the ``store`` fixture), a real GitOps repository on disk, and the fake Kubernetes API server
serving Argo CD Application objects (support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
from pydantic import SecretStr

from forge.adapters.k8s_argocd import ArgoCDApplications
from forge.adapters.postgres_store import PostgresStore
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployment_health import DeploymentHealth
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.entities import Deployment
from forge.domain.status import DeploymentStatus
from forge.embedded.gitops import create_gitops_repository
from forge.errors import ConflictError
from forge.gitops import ApplicationDefaults, GitOpsWriter
from forge.ports.store import NewDeployment, NewRepository
from forge.settings import ArgoCDSettings
from forge.testing.releases import new_release

from .support import TOKEN, FakeKube, application

REPO = "acme/shop"
APP = "acme-shop-app"


@dataclass
class Platform:
    store: PostgresStore
    remote: Path
    kube: FakeKube
    tmp: Path
    argocd: ArgoCDApplications

    def controller(self, name: str) -> DeploymentReconciler:
        """One controller process: its own work copies and follower, the shared store (claim lease: 30 s)."""
        work = self.tmp / name
        health = DeploymentHealth(
            deployments=self.store,
            deployer=self.argocd,
            revisions=Pygit2GitOps(str(self.remote), work / "revisions"),
            timeout=600,
            poll=5,
        )
        writer = GitOpsWriter(
            Pygit2GitOps(str(self.remote), work / "writer"),
            ApplicationDefaults(repo_url="https://git.example/gitops.git"),
        )
        return DeploymentReconciler(
            deployments=self.store,
            approvals=self.store,
            releases=self.store,
            runs=self.store,
            writer=writer,
            health=health,
        )

    def head(self) -> str:
        return str(pygit2.Repository(str(self.remote)).revparse_single("refs/heads/main").id)

    async def ask(self, n: int) -> Deployment:
        release, _ = await self.store.record_release(new_release(REPO, "app", n))
        deployment, _ = await self.store.request_deployment(NewDeployment(release.id, "dev", "alice", f"deploy {n}"))
        return deployment


@pytest.fixture
async def platform(store: PostgresStore, kube: FakeKube, tmp_path: Path) -> AsyncIterator[Platform]:
    await store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    remote = Path(create_gitops_repository(tmp_path / "gitops.git"))
    argocd = ArgoCDApplications.from_settings(
        ArgoCDSettings(enabled=True, server=kube.url, token=SecretStr(TOKEN), request_timeout=5)
    )
    yield Platform(store, remote, kube, tmp_path, argocd)
    await argocd.close()


async def test_a_new_controller_follows_a_committed_deployment_at_once(platform: Platform) -> None:
    p = platform
    asked = await p.ask(1)
    first = p.controller("first")
    [written] = await first.deploy_pending()
    commit = p.head()
    assert (written.id, written.status, written.gitops_commit) == (asked.id, DeploymentStatus.PENDING, commit)
    p.kube.put_application(application(APP, sync="OutOfSync", health="Progressing", revision=commit))
    assert first.health is not None
    assert await first.health.follow() == []
    # the first controller dies here; its claim is seconds old, far from stale

    second = p.controller("second")
    assert await second.deploy_pending() == []  # committed: never claimed again, never written again
    assert p.head() == commit
    p.kube.put_application(application(APP, revision=commit))
    assert second.health is not None
    [done] = await second.health.follow()  # at once, on its first look
    assert (done.id, done.status, done.gitops_commit) == (asked.id, DeploymentStatus.ACTIVE, commit)
    assert (await p.store.active_deployment("dev", REPO, "app")).id == asked.id
    assert await p.store.committed_deployments(limit=10) == []


async def test_the_store_lists_committed_deployments_and_claims_them_no_more(platform: Platform) -> None:
    p = platform
    one, two = await p.ask(1), await p.ask(2)
    [claimed_one, claimed_two] = await p.store.claim_deployments(limit=10, claimer="a", lease=0.001)
    assert {claimed_one.id, claimed_two.id} == {one.id, two.id}
    recorded = await p.store.record_pointer(one.id, "a" * 40)
    assert (recorded.status, recorded.gitops_commit) == (DeploymentStatus.PENDING, "a" * 40)
    [listed] = await p.store.committed_deployments(limit=10)
    assert (listed.deployment.id, listed.deployment.gitops_commit) == (one.id, "a" * 40)
    assert 0 <= listed.waited < 60
    again = await p.store.record_pointer(one.id, "a" * 40)  # a repeat keeps the commit time
    [relisted] = await p.store.committed_deployments(limit=10)
    assert again == recorded
    assert relisted.waited >= listed.waited
    # stale claims are taken over, but only the deployment whose pointer is not recorded
    assert [d.id for d in await p.store.claim_deployments(limit=10, claimer="b", lease=0.001)] == [two.id]
    await p.store.fail_deployment(one.id, "Degraded")
    assert await p.store.committed_deployments(limit=10) == []
    with pytest.raises(
        ConflictError, match=r"recording the pointer of deployment .*: the deployment is already failed"
    ):
        await p.store.record_pointer(one.id, "b" * 40)

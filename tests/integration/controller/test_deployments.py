"""The DeploymentReconciler on the memory store and a real GitOps repository on disk: automatic deployments,
the policy checked again before the write, GitOps outages, and the previous deployment kept active."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pygit2
import pytest
import stamina

from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.discovery.releases import deploy_intents
from forge.domain.config import RepoConfig
from forge.domain.discovery import ReleaseIntent
from forge.domain.entities import Release
from forge.domain.status import DeploymentStatus
from forge.embedded.gitops import create_gitops_repository
from forge.gitops import ApplicationDefaults, GitOpsWriter, read_trailers
from forge.ports.fakes import MemoryStore
from forge.ports.store import NewApproval, NewDeployment, NewRepository, NewRun
from forge.testing.discoveries import lib_and_app
from forge.testing.releases import new_release

REPO = "acme/shop"


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@dataclass
class Setup:
    store: MemoryStore
    remote: Path
    reconciler: DeploymentReconciler

    def commit_message(self, sha: str) -> str:
        commit = pygit2.Repository(str(self.remote)).revparse_single(sha).peel(pygit2.Commit)
        return commit.message

    def pointer(self, environment: str, project: str = "app") -> bytes | None:
        repo = pygit2.Repository(str(self.remote))
        tree = repo.revparse_single("refs/heads/main").peel(pygit2.Tree)
        path = f"{environment}/apps/acme/shop/{project}/release.yaml"
        try:
            blob = tree[path]
        except KeyError:
            return None
        data: bytes = repo[blob.id].peel(pygit2.Blob).data
        return data


@pytest.fixture
async def setup(tmp_path: Path) -> Setup:
    store = MemoryStore()
    await store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    remote = Path(create_gitops_repository(tmp_path / "gitops.git"))
    writer = GitOpsWriter(
        Pygit2GitOps(str(remote), tmp_path / "work"), ApplicationDefaults(repo_url="https://git.example/gitops.git")
    )
    reconciler = DeploymentReconciler(
        deployments=store, approvals=store, releases=store, runs=store, writer=writer, deploy_timeout=5
    )
    return Setup(store, remote, reconciler)


async def _released(s: Setup, n: int, *, with_run: bool = True) -> Release:
    """Release ``n`` of project ``app``; with its run, whose discovery carries the default deploy intents."""
    commit = f"{n:040x}"
    run_id: UUID | None = None
    if with_run:
        run, _ = await s.store.create_run(NewRun(repository=REPO, commit_sha=commit, branch="main"))
        intents = [ReleaseIntent(project="app", trigger="push", reason="branch main matches main", branch="main")]
        discovery = lib_and_app(commit, REPO).model_copy(
            update={"releases": intents, "deploys": deploy_intents(intents, RepoConfig().environments)}
        )
        await s.store.claim_discovery(limit=10)
        await s.store.record_discovery(run.id, discovery, "discovery/key")
        run_id = run.id
    release, _ = await s.store.record_release(new_release(REPO, "app", n, commit_sha=commit, run_id=run_id))
    return release


async def test_a_release_deploys_itself_to_dev_only(setup: Setup) -> None:
    s = setup
    release = await _released(s, 1)
    asked = await s.reconciler.plan_auto_deploys()
    assert [(d.environment, d.status, d.deployed_by) for d in asked] == [("dev", "pending", "forge-controller")]
    assert asked[0].reason == "auto-deploy: release 1 on branch main"
    assert await s.reconciler.plan_auto_deploys() == []  # planned once
    [done] = await s.reconciler.deploy_pending()
    assert done.status is DeploymentStatus.ACTIVE
    assert done.gitops_commit is not None
    pointer = s.pointer("dev")
    assert pointer is not None
    assert release.oci_digest.encode() in pointer
    trailers = read_trailers(s.commit_message(done.gitops_commit))
    assert trailers["Forge-Environment"] == "dev"
    assert trailers["Forge-Release-Number"] == "1"
    assert trailers["Forge-Release-Commit"] == release.commit_sha
    assert trailers["Forge-Release-Digest"] == release.oci_digest
    assert trailers["Forge-Deployed-By"] == "forge-controller"
    assert trailers["Forge-Reason"] == "auto-deploy: release 1 on branch main"
    assert s.pointer("staging") is None


async def test_staging_needs_an_approval_still_valid_when_the_pointer_is_written(setup: Setup) -> None:
    s = setup
    release = await _released(s, 1, with_run=False)  # no discovery: the default environments
    later = datetime.now(UTC) + timedelta(hours=1)
    approval = await s.store.create_approval(NewApproval(release.id, "staging", "bob", "tested", later))
    asked, _ = await s.store.request_deployment(NewDeployment(release.id, "staging", "alice", "promote"))
    await s.store.revoke_approval(approval.id, "carol")  # between the request and the write
    [failed] = await s.reconciler.deploy_pending()
    assert failed.id == asked.id
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error is not None
    assert "staging needs an active, unexpired approval of release 1 of acme/shop/app" in failed.error
    assert s.pointer("staging") is None
    await s.store.create_approval(NewApproval(release.id, "staging", "bob", "tested again", later))
    again, created = await s.store.request_deployment(NewDeployment(release.id, "staging", "alice", "promote"))
    assert created is True
    [done] = await s.reconciler.deploy_pending()
    assert (done.id, done.status) == (again.id, DeploymentStatus.ACTIVE)
    assert s.pointer("staging") is not None


async def test_a_gitops_outage_fails_the_new_deployment_and_keeps_the_active_one(setup: Setup) -> None:
    s = setup
    one = await _released(s, 1)
    await s.reconciler.plan_auto_deploys()
    [first] = await s.reconciler.deploy_pending()
    two = await _released(s, 2)
    await s.reconciler.plan_auto_deploys()
    moved = s.remote.with_name("moved.git")
    s.remote.rename(moved)  # the remote is gone
    try:
        [failed] = await s.reconciler.deploy_pending()
    finally:
        moved.rename(s.remote)
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("gave up after 5 s: ")
    active = await s.store.active_deployment("dev", REPO, "app")
    assert (active.id, active.release_number) == (first.id, 1)
    pointer = s.pointer("dev")
    assert pointer is not None
    assert one.oci_digest.encode() in pointer
    assert two.oci_digest.encode() not in pointer


async def test_rolling_back_deploys_the_earlier_release_and_supersedes(setup: Setup) -> None:
    s = setup
    one = await _released(s, 1)
    await _released(s, 2)
    await s.reconciler.plan_auto_deploys()
    done = await s.reconciler.deploy_pending()
    assert [(d.release_number, d.status) for d in done] == [(1, "active"), (2, "active")]
    back, _ = await s.store.request_deployment(NewDeployment(one.id, "dev", "alice", "rollback"))
    [rolled] = await s.reconciler.deploy_pending()
    assert (rolled.id, rolled.status) == (back.id, DeploymentStatus.ACTIVE)
    history = await s.store.deployment_history("dev", REPO, "app", limit=10, offset=0)
    assert [(d.release_number, d.status) for d in history.items] == [
        (1, "active"),
        (2, "superseded"),
        (1, "superseded"),
    ]
    pointer = s.pointer("dev")
    assert pointer is not None
    assert one.oci_digest.encode() in pointer

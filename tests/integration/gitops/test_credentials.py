"""GitOps remotes that need credentials, over real git smart HTTP with Basic auth (``git http-backend`` behind a
threaded http.server: git_http.py): the right ones push, wrong or missing ones fail at once with one line naming
the remote and "authentication failed", never the secret, and nothing is half written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
import stamina
from pydantic import SecretStr
from tests.integration.gitops.git_http import GitHttpServer
from tests.integration.gitops.support import AT, change

from forge.adapters._git_remote_auth import GitCredentials
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.status import DeploymentStatus
from forge.errors import AuthenticationError, ServiceUnavailableError
from forge.gitops import ApplicationDefaults, GitOpsWriter
from forge.ports.fakes import MemoryStore
from forge.ports.store import NewDeployment, NewRepository
from forge.settings import Settings
from forge.testing.releases import new_release

RIGHT = GitCredentials(username="forge", password=SecretStr("s3cret-token"))
WRONG = GitCredentials(username="forge", password=SecretStr("not-the-token"))


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


def _remote(server: GitHttpServer) -> Path:
    return server.root / "gitops.git"


def _head(server: GitHttpServer) -> str:
    return str(pygit2.Repository(str(_remote(server))).revparse_single("refs/heads/main").id)


def _writer(server: GitHttpServer, work: Path, credentials: GitCredentials | None, url: str = "") -> GitOpsWriter:
    repository = Pygit2GitOps(url or f"{server.url}gitops.git", work, credentials=credentials, clock=lambda: AT)
    return GitOpsWriter(
        repository, ApplicationDefaults(repo_url="https://git.example.com/gitops.git"), clock=lambda: AT
    )


async def test_the_right_credentials_push(git_http: GitHttpServer, tmp_path: Path) -> None:
    seed = _head(git_http)
    result = await _writer(git_http, tmp_path / "work", RIGHT).deploy(change())
    assert result.changed
    assert _head(git_http) == result.sha != seed
    pushes = [s for s in git_http.seen if s.method == "POST" and s.path.endswith("/git-receive-pack")]
    assert [(s.status, s.user) for s in pushes] == [(200, "forge")]
    assert (401, None) in [(s.status, s.user) for s in git_http.seen]  # libgit2 asked only when challenged


async def test_wrong_credentials_fail_in_one_line_without_the_secret_and_write_nothing(
    git_http: GitHttpServer, tmp_path: Path
) -> None:
    seed = _head(git_http)
    with pytest.raises(AuthenticationError) as info:
        await _writer(git_http, tmp_path / "work", WRONG).deploy(change())
    assert str(info.value) == (
        f"gitops: {git_http.url}gitops.git: authentication failed (fetch from the remote): "
        "the remote refused the credentials"
    )
    assert _head(git_http) == seed
    assert not [s for s in git_http.seen if s.path.endswith("/git-receive-pack")]


async def test_a_public_remote_without_credentials_refuses_the_push_and_nothing_moves(
    git_http: GitHttpServer, tmp_path: Path
) -> None:
    git_http.anonymous_read = True
    seed = _head(git_http)
    anonymous = _writer(git_http, tmp_path / "work", None)
    with pytest.raises(AuthenticationError) as info:
        await anonymous.deploy(change())
    assert str(info.value) == (
        f"gitops: {git_http.url}gitops.git: authentication failed (push to the remote): the remote asks for a "
        "user and password and FORGE_GITOPS__PASSWORD is not set"
    )
    assert _head(git_http) == seed
    assert await anonymous.read_pointer("dev", "acme/shop", "api") is None  # reads need nothing here
    # the same work copy with credentials: exactly one commit on the seed, the refused one left nothing behind
    result = await _writer(git_http, tmp_path / "work", RIGHT).deploy(change())
    head = pygit2.Repository(str(_remote(git_http))).references["refs/heads/main"].peel(pygit2.Commit)
    assert (str(head.id), str(head.parents[0].id)) == (result.sha, seed)


async def test_a_failed_login_fails_the_deployment_at_once_and_the_active_one_stays(
    git_http: GitHttpServer, tmp_path: Path
) -> None:
    store = MemoryStore()
    await store.register_repository(NewRepository("acme/shop", "https://git.example/acme/shop.git"))
    releases = [(await store.record_release(new_release("acme/shop", "api", n)))[0] for n in (1, 2)]

    def reconciler(credentials: GitCredentials) -> DeploymentReconciler:
        writer = _writer(git_http, tmp_path / "controller", credentials)
        return DeploymentReconciler(
            deployments=store, approvals=store, releases=store, runs=store, writer=writer, deploy_timeout=600
        )

    await store.request_deployment(NewDeployment(releases[0].id, "dev", "alice", "first"))
    [first] = await reconciler(RIGHT).deploy_pending()
    assert first.status is DeploymentStatus.ACTIVE
    head = _head(git_http)

    git_http.password = "rotated-token"  # the remote's token was rotated, ours was not
    await store.request_deployment(NewDeployment(releases[1].id, "dev", "alice", "second"))
    [failed] = await reconciler(RIGHT).deploy_pending()  # permanent: no retrying for deploy_timeout
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error == (
        f"gitops: {git_http.url}gitops.git: authentication failed (fetch from the remote): "
        "the remote refused the credentials"
    )
    assert (await store.active_deployment("dev", "acme/shop", "api")).id == first.id
    assert failed.gitops_commit is None
    assert _head(git_http) == head


async def test_credentials_come_from_forge_gitops_settings(
    git_http: GitHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_GITOPS__URL", f"{git_http.url}gitops.git")
    monkeypatch.setenv("FORGE_GITOPS__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("FORGE_GITOPS__USERNAME", "forge")
    monkeypatch.setenv("FORGE_GITOPS__PASSWORD", "s3cret-token")
    settings = Settings()
    assert "s3cret-token" not in repr(settings.gitops)
    repository = Pygit2GitOps.from_settings(settings.gitops)
    result = await GitOpsWriter.for_settings(repository, settings.gitops).deploy(change())
    assert _head(git_http) == result.sha


async def test_user_info_in_the_url_works_and_is_never_shown(git_http: GitHttpServer, tmp_path: Path) -> None:
    port = git_http.url.rstrip("/").rpartition(":")[2]
    shown = f"http://127.0.0.1:{port}/gitops.git"
    right = _writer(git_http, tmp_path / "work", None, url=f"http://forge:s3cret-token@127.0.0.1:{port}/gitops.git")
    assert (await right.deploy(change())).changed
    wrong = Pygit2GitOps(f"http://forge:leaked-token@127.0.0.1:{port}/gitops.git", tmp_path / "other")
    assert wrong.url == shown
    with pytest.raises(AuthenticationError) as info:
        await wrong.read(["dev/env.yaml"])
    assert str(info.value).startswith(f"gitops: {shown}: authentication failed")
    assert "leaked-token" not in str(info.value)
    assert "leaked-token" not in repr(info.value.details)


async def test_a_missing_repository_behind_auth_is_not_an_authentication_error(
    git_http: GitHttpServer, tmp_path: Path
) -> None:
    with pytest.raises(ServiceUnavailableError) as info:
        await _writer(git_http, tmp_path / "work", RIGHT, url=f"{git_http.url}nothing.git").deploy(change())
    assert isinstance(info.value, ServiceUnavailableError)
    assert str(info.value).startswith(f"gitops: cannot fetch {git_http.url}nothing.git: ")
    assert "authentication failed" not in str(info.value)

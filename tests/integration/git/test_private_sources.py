"""Private source repositories: Pygit2Mirrors logs in with the worker's FORGE_GIT__* credentials, over real git
smart HTTP with Basic auth (tests/integration/gitops/git_http.py) and a real OpenSSH server
(tests/integration/gitops/sshd.py). The right token or key (and a known host key) mirrors and discovers; a wrong or
missing one, or an unknown host, fails at once with one permanent line naming the URL without secrets, and leaves no
mirror behind; a discovery job on a real worker fails with error code ``source_auth_failed``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from tests.integration.gitops.git_http import GitHttpServer
from tests.integration.gitops.sshd import SshServer, start_sshd

from forge.adapters._git_remote_auth import GitCredentials
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.discovery import discover
from forge.domain.messages import STREAMS, JobType
from forge.errors import AuthenticationError, PermanentError
from forge.jobs.dispatch import dispatch
from forge.settings import Settings, WorkerSettings
from forge.testing.gitrepos import commit_files
from forge.testing.jobs import discovery_job
from forge.workflows.workers.discovery import DiscoveryHandler
from forge.workflows.workers.runtime import Worker

PROJECT = "name: svc\nphases:\n  build:\n    steps:\n      - {name: b, run: make}\n"
TOKEN = "s3cret-token"
RIGHT = GitCredentials(username="forge", password=SecretStr(TOKEN))
WRONG = GitCredentials(username="forge", password=SecretStr("not-the-token"))


@pytest.fixture
def private_http(tmp_path: Path) -> Iterator[tuple[GitHttpServer, str, str]]:
    """A smart-HTTP server wanting Basic auth for everything (reads too) serving ``acme/private.git``; the
    server, the repository's URL and its one commit."""
    root = tmp_path / "served"
    commit = commit_files(root / "acme" / "private.git", {"svc/.forge/project.yaml": PROJECT, "svc/a.txt": "1"})
    server = GitHttpServer(root, "forge", TOKEN)
    server.start()
    yield server, f"{server.url}acme/private.git", commit
    server.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _left_in(cache: Path) -> list[str]:
    """What a sync left in the cache (the lock file of the mirror is fine; a mirror or a staging copy is not)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.parent == cache / "acme")


async def test_the_right_token_mirrors_and_discovers_and_writes_it_nowhere(
    private_http: tuple[GitHttpServer, str, str], tmp_path: Path
) -> None:
    server, url, commit = private_http
    cache = tmp_path / "cache"
    mirrors = Pygit2Mirrors(cache, credentials=RIGHT)
    reader = await mirrors.sync("acme/private", url)
    assert reader.resolve("HEAD") == commit
    result = await asyncio.to_thread(discover, reader, commit, None)
    assert [p.name for p in result.projects] == ["svc"]
    assert {s.user for s in server.seen if s.status == 200} == {"forge"}
    assert (401, None) in [(s.status, s.user) for s in server.seen]  # the server asked; we answered
    # a later sync logs in again (fetch of a new commit)
    second = commit_files(server.root / "acme" / "private.git", {"svc/a.txt": "2"})
    assert (await mirrors.sync("acme/private", url, want=second)).resolve("main") == second
    for path in (cache / "acme" / "private.git").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert f"url = {url}\n" in (cache / "acme" / "private.git" / "config").read_text()


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        (WRONG, "the remote refused the credentials"),
        (None, "the remote asks for a user and password and FORGE_GIT__PASSWORD is not set"),
    ],
    ids=["wrong-token", "no-token"],
)
async def test_a_wrong_or_missing_token_fails_permanently_in_one_line_and_leaves_no_mirror(
    private_http: tuple[GitHttpServer, str, str], tmp_path: Path, credentials: GitCredentials | None, reason: str
) -> None:
    _, url, _ = private_http
    cache = tmp_path / "cache"
    with pytest.raises(AuthenticationError) as info:
        await Pygit2Mirrors(cache, credentials=credentials).sync("acme/private", url)
    assert str(info.value) == f"source: {url}: authentication failed (fetch from the remote): {reason}"
    assert info.value.code == "source_auth_failed"
    assert isinstance(info.value, PermanentError)
    assert "not-the-token" not in str(info.value)
    assert _left_in(cache) == ["acme/private.git.lock"]


async def test_a_token_that_stops_working_fails_the_sync_and_keeps_the_mirror(
    private_http: tuple[GitHttpServer, str, str], tmp_path: Path
) -> None:
    server, url, commit = private_http
    cache = tmp_path / "cache"
    await Pygit2Mirrors(cache, credentials=RIGHT).sync("acme/private", url)
    commit_files(server.root / "acme" / "private.git", {"svc/a.txt": "2"})
    with pytest.raises(AuthenticationError, match=r"the remote refused the credentials$"):
        await Pygit2Mirrors(cache, credentials=WRONG).sync("acme/private", url)
    assert (await Pygit2Mirrors(cache).open("acme/private")).resolve("main") == commit


async def test_the_settings_reach_the_mirrors(
    private_http: tuple[GitHttpServer, str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, url, commit = private_http
    monkeypatch.setenv("FORGE_GIT__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FORGE_GIT__USERNAME", "forge")
    monkeypatch.setenv("FORGE_GIT__PASSWORD", TOKEN)
    settings = Settings().git
    assert TOKEN not in repr(settings)
    reader = await Pygit2Mirrors.from_settings(settings).sync("acme/private", url)
    assert reader.resolve("main") == commit
    assert (tmp_path / "cache" / "acme" / "private.git" / "HEAD").exists()


# -- SSH ------------------------------------------------------------------------------------------------------


def _ssh_source(server: SshServer, name: str) -> tuple[str, str]:
    """A private repository served by sshd: its URL and its one commit."""
    commit = commit_files(server.root / "repos" / f"{name}.git", {"svc/.forge/project.yaml": PROJECT})
    return server.url(name), commit


def _mirrors(server: SshServer, cache: Path, known_hosts: Path, key: str = "right_key") -> Pygit2Mirrors:
    return Pygit2Mirrors(
        cache, credentials=GitCredentials(ssh_key=SecretStr(server.private_key(key))), known_hosts=known_hosts
    )


def _known_hosts(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines))
    return path


async def test_over_ssh_the_right_key_to_a_known_host_mirrors(sshd: SshServer, tmp_path: Path) -> None:
    url, commit = _ssh_source(sshd, "src-right")
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd.known_hosts_line())
    logged = len(sshd.log())
    reader = await _mirrors(sshd, tmp_path / "cache", known_hosts).sync("acme/ssh", url)
    assert reader.resolve("HEAD") == commit
    assert f"Accepted publickey for {sshd.user}" in sshd.log()[logged:]


async def test_over_ssh_an_unknown_host_is_refused_before_any_key_is_offered(sshd: SshServer, tmp_path: Path) -> None:
    url, _ = _ssh_source(sshd, "src-unknown-host")
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd.known_hosts_line(f"[git.example]:{sshd.port}"))
    logged = len(sshd.log())
    cache = tmp_path / "cache"
    with pytest.raises(AuthenticationError) as info:
        await _mirrors(sshd, cache, known_hosts).sync("acme/ssh", url)
    assert str(info.value) == (
        f"source: {url}: host key verification failed (fetch from the remote): "
        f"[127.0.0.1]:{sshd.port} is not in {known_hosts} "
        f"(it presented ssh-ed25519 {sshd.fingerprint('host_ed25519_key')})"
    )
    assert info.value.code == "source_host_key_rejected"
    assert "Connection from 127.0.0.1" in sshd.log()[logged:]
    assert "publickey" not in sshd.log()[logged:]
    assert _left_in(cache) == ["acme/ssh.git.lock"]


async def test_over_ssh_a_wrong_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    url, _ = _ssh_source(sshd, "src-wrong-key")
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd.known_hosts_line())
    logged = len(sshd.log())
    cache = tmp_path / "cache"
    with pytest.raises(AuthenticationError) as info:
        await _mirrors(sshd, cache, known_hosts, key="wrong_key").sync("acme/ssh", url)
    assert str(info.value) == (
        f"source: {url}: authentication failed (fetch from the remote): the remote refused the credentials"
    )
    assert info.value.code == "source_auth_failed"
    assert "PRIVATE KEY" not in str(info.value)
    assert f"Failed publickey for {sshd.user}" in sshd.log()[logged:]
    assert _left_in(cache) == ["acme/ssh.git.lock"]


# -- through a worker -----------------------------------------------------------------------------------------


@pytest.fixture
async def discovery_worker(bus: NatsBus, objects: MinioObjectStore, tmp_path: Path) -> AsyncIterator[Worker]:
    """A discovery worker whose mirrors have no credentials (a pool that may fetch public sources only)."""
    await bus.ensure_streams(STREAMS)
    handler = DiscoveryHandler(mirrors=Pygit2Mirrors(tmp_path / "worker-cache"), objects=objects)
    settings = WorkerSettings(concurrency=1, ack_wait=5.0, heartbeat=1.0, max_deliver=3, fetch_wait=0.2)
    worker = Worker(job_type=JobType.DISCOVERY, handler=handler, bus=bus, objects=objects, settings=settings)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        yield worker
        stop.set()


async def test_a_discovery_job_on_a_private_source_without_credentials_fails_at_once_with_its_code(
    discovery_worker: Worker, bus: NatsBus, private_http: tuple[GitHttpServer, str, str], tmp_path: Path
) -> None:
    server, url, commit = private_http
    result = await dispatch(bus, discovery_job(url, commit), timeout=60)
    assert not result.success
    assert result.error is not None
    assert result.error.code == "source_auth_failed"
    assert result.error.permanent
    assert result.error.message == (
        f"source: {url}: authentication failed (fetch from the remote): the remote asks for a user and password "
        "and FORGE_GIT__PASSWORD is not set"
    )
    assert len([s for s in server.seen if s.path.endswith("/info/refs?service=git-upload-pack")]) == 1  # no retry
    assert not (tmp_path / "worker-cache" / "acme" / "mono.git").exists()

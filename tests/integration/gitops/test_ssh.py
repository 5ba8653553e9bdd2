"""GitOps remotes over SSH against a real OpenSSH server (sshd.py): the pointer commit is pushed with the right key
to a host whose key is in FORGE_GITOPS__SSH_KNOWN_HOSTS (plain or hashed entry); a wrong key, an unknown host, a
changed host key or an unreadable known_hosts file fail at once in one line naming the remote (and the host, or the
file and line), push nothing, and - for the host key failures - offer the server no key at all."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
import stamina
from pydantic import SecretStr
from tests.integration.gitops.sshd import SshServer
from tests.integration.gitops.support import AT, change

from forge.adapters._git_remote_auth import GitCredentials
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.status import DeploymentStatus
from forge.errors import AuthenticationError, InvalidInputError
from forge.gitops import ApplicationDefaults, GitOpsWriter
from forge.ports.fakes import MemoryStore
from forge.ports.store import NewDeployment, NewRepository
from forge.settings import Settings
from forge.testing.releases import new_release


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


def _head(repository: Path) -> str:
    return str(pygit2.Repository(str(repository)).revparse_single("refs/heads/main").id)


def _known_hosts(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines))
    return path


def _writer(server: SshServer, name: str, work: Path, known_hosts: Path, key: str = "right_key") -> GitOpsWriter:
    credentials = GitCredentials(ssh_key=SecretStr(server.private_key(key)))
    repository = Pygit2GitOps(
        server.url(name), work, credentials=credentials, known_hosts=known_hosts, clock=lambda: AT
    )
    return GitOpsWriter(
        repository, ApplicationDefaults(repo_url="https://git.example.com/gitops.git"), clock=lambda: AT
    )


class _LogSince:
    """What sshd logged from now on."""

    def __init__(self, server: SshServer):
        self._server = server
        self._start = len(server.log())

    @property
    def text(self) -> str:
        return self._server.log()[self._start :]


async def test_a_deploy_over_ssh_pushes_the_pointer_commit_with_the_right_key_to_a_known_host(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = sshd_server.repository("deploy")
    seed = _head(remote)
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd_server.known_hosts_line())
    logged = _LogSince(sshd_server)
    result = await _writer(sshd_server, "deploy", tmp_path / "work", known_hosts).deploy(change())
    assert result.changed
    head = pygit2.Repository(str(remote)).references["refs/heads/main"].peel(pygit2.Commit)
    assert (str(head.id), str(head.parents[0].id)) == (result.sha, seed)
    assert head.tree["dev/apps/acme/shop/api/release.yaml"] is not None
    assert f"Accepted publickey for {sshd_server.user}" in logged.text
    assert sshd_server.fingerprint("right_key") in logged.text


async def test_a_hashed_known_hosts_entry_is_honoured(sshd_server: SshServer, tmp_path: Path) -> None:
    remote = sshd_server.repository("hashed")
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd_server.known_hosts_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().startswith("|1|")  # OpenSSH's own hashing of [127.0.0.1]:<port>
    assert str(sshd_server.port) not in known_hosts.read_text()
    result = await _writer(sshd_server, "hashed", tmp_path / "work", known_hosts).deploy(change())
    assert _head(remote) == result.sha


async def test_a_wrong_key_fails_in_one_line_without_the_key_and_pushes_nothing(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = sshd_server.repository("wrong-key")
    seed = _head(remote)
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd_server.known_hosts_line())
    logged = _LogSince(sshd_server)
    with pytest.raises(AuthenticationError) as info:
        await _writer(sshd_server, "wrong-key", tmp_path / "work", known_hosts, key="wrong_key").deploy(change())
    assert str(info.value) == (
        f"gitops: {sshd_server.url('wrong-key')}: authentication failed (fetch from the remote): "
        "the remote refused the credentials"
    )
    assert "PRIVATE KEY" not in str(info.value)
    assert _head(remote) == seed
    assert "Accepted publickey" not in logged.text
    assert f"Failed publickey for {sshd_server.user}" in logged.text  # the key was offered, and refused


async def test_an_unknown_host_fails_before_any_key_is_offered_and_pushes_nothing(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = sshd_server.repository("unknown-host")
    seed = _head(remote)
    # the right key, but for port 22 only (no [host]:port), and another host's entry
    known_hosts = _known_hosts(
        tmp_path / "known_hosts",
        sshd_server.known_hosts_line("127.0.0.1"),
        sshd_server.known_hosts_line(f"[git.example]:{sshd_server.port}"),
    )
    logged = _LogSince(sshd_server)
    with pytest.raises(AuthenticationError) as info:
        await _writer(sshd_server, "unknown-host", tmp_path / "work", known_hosts).deploy(change())
    assert str(info.value) == (
        f"gitops: {sshd_server.url('unknown-host')}: host key verification failed (fetch from the remote): "
        f"[127.0.0.1]:{sshd_server.port} is not in {known_hosts} "
        f"(it presented ssh-ed25519 {sshd_server.fingerprint('host_ed25519_key')})"
    )
    assert info.value.code == "host_key_rejected"
    assert _head(remote) == seed
    assert "Connection from 127.0.0.1" in logged.text
    assert "publickey" not in logged.text  # no key was offered to a host we do not know


async def test_a_changed_host_key_is_refused_and_nothing_is_pushed(sshd_server: SshServer, tmp_path: Path) -> None:
    remote = sshd_server.repository("changed-key")
    seed = _head(remote)
    other_key = " ".join((sshd_server.root / "wrong_key.pub").read_text().split()[:2])  # another ed25519 key
    known_hosts = _known_hosts(
        tmp_path / "known_hosts", "# the host as we knew it\n", f"[127.0.0.1]:{sshd_server.port} {other_key}\n"
    )
    logged = _LogSince(sshd_server)
    with pytest.raises(AuthenticationError) as info:
        await _writer(sshd_server, "changed-key", tmp_path / "work", known_hosts).deploy(change())
    assert str(info.value) == (
        f"gitops: {sshd_server.url('changed-key')}: host key verification failed (fetch from the remote): "
        f"the host key of [127.0.0.1]:{sshd_server.port} (ssh-ed25519 {sshd_server.fingerprint('host_ed25519_key')}) "
        f"is not the one on line 2 of {known_hosts}: the host's key changed, or someone is in between"
    )
    assert _head(remote) == seed
    assert "Connection from 127.0.0.1" in logged.text
    assert "publickey" not in logged.text


async def test_a_malformed_known_hosts_file_is_named_with_its_line_and_nothing_is_sent(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = sshd_server.repository("malformed")
    seed = _head(remote)
    known_hosts = _known_hosts(
        tmp_path / "known_hosts", sshd_server.known_hosts_line(), f"[127.0.0.1]:{sshd_server.port} ssh-ed25519 AAAA!\n"
    )
    logged = _LogSince(sshd_server)
    with pytest.raises(InvalidInputError) as info:
        await _writer(sshd_server, "malformed", tmp_path / "work", known_hosts).deploy(change())
    assert str(info.value) == (
        f"gitops: {sshd_server.url('malformed')}: cannot check the SSH host key: known_hosts {known_hosts} line 2: "
        "the key is not base64 (FORGE_GITOPS__SSH_KNOWN_HOSTS)"
    )
    assert _head(remote) == seed
    assert "Connection from" not in logged.text  # not even connected


async def test_a_rejected_host_key_fails_the_deployment_at_once_and_the_active_one_stays(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = sshd_server.repository("reconciled")
    store = MemoryStore()
    await store.register_repository(NewRepository("acme/shop", "https://git.example/acme/shop.git"))
    releases = [(await store.record_release(new_release("acme/shop", "api", n)))[0] for n in (1, 2)]

    def reconciler(known_hosts: Path) -> DeploymentReconciler:
        writer = _writer(sshd_server, "reconciled", tmp_path / "controller", known_hosts)
        return DeploymentReconciler(
            deployments=store, approvals=store, releases=store, runs=store, writer=writer, deploy_timeout=600
        )

    await store.request_deployment(NewDeployment(releases[0].id, "dev", "alice", "first"))
    [first] = await reconciler(_known_hosts(tmp_path / "right", sshd_server.known_hosts_line())).deploy_pending()
    assert first.status is DeploymentStatus.ACTIVE
    head = _head(remote)

    # the remote's host key is not the one we know any more (someone in between, or an unannounced rekey)
    other_key = " ".join((sshd_server.root / "wrong_key.pub").read_text().split()[:2])
    changed = _known_hosts(tmp_path / "changed", f"[127.0.0.1]:{sshd_server.port} {other_key}\n")
    await store.request_deployment(NewDeployment(releases[1].id, "dev", "alice", "second"))
    [failed] = await reconciler(changed).deploy_pending()  # permanent: no retrying for deploy_timeout
    assert failed.status is DeploymentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(
        f"gitops: {sshd_server.url('reconciled')}: host key verification failed (fetch from the remote): "
        f"the host key of [127.0.0.1]:{sshd_server.port} "
    )
    assert (await store.active_deployment("dev", "acme/shop", "api")).id == first.id
    assert failed.gitops_commit is None
    assert _head(remote) == head


async def test_ssh_settings_reach_the_adapter(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = sshd_server.repository("settings")
    known_hosts = _known_hosts(tmp_path / "known_hosts", sshd_server.known_hosts_line())
    monkeypatch.setenv("FORGE_GITOPS__URL", sshd_server.url("settings"))
    monkeypatch.setenv("FORGE_GITOPS__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("FORGE_GITOPS__SSH_KEY", sshd_server.private_key("right_key"))
    monkeypatch.setenv("FORGE_GITOPS__SSH_KNOWN_HOSTS", str(known_hosts))
    settings = Settings()
    assert settings.gitops.ssh_known_hosts == known_hosts
    repository = Pygit2GitOps.from_settings(settings.gitops)
    result = await GitOpsWriter.for_settings(repository, settings.gitops).deploy(change())
    assert _head(remote) == result.sha


async def test_unset_the_known_hosts_of_home_are_read_and_without_them_ssh_is_refused(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = sshd_server.repository("home")
    seed = _head(remote)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FORGE_GITOPS__URL", sshd_server.url("home"))
    monkeypatch.setenv("FORGE_GITOPS__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("FORGE_GITOPS__SSH_KEY", sshd_server.private_key("right_key"))
    monkeypatch.delenv("FORGE_GITOPS__SSH_KNOWN_HOSTS", raising=False)
    settings = Settings().gitops
    assert settings.ssh_known_hosts is None
    logged = _LogSince(sshd_server)
    with pytest.raises(InvalidInputError) as info:
        await Pygit2GitOps.from_settings(settings).read(["dev/env.yaml"])
    assert str(info.value) == (
        f"gitops: {sshd_server.url('home')}: cannot check the SSH host key: known_hosts {home}/.ssh/known_hosts "
        "does not exist (FORGE_GITOPS__SSH_KNOWN_HOSTS is not set, so $HOME/.ssh/known_hosts is read)"
    )
    assert "Connection from" not in logged.text

    (home / ".ssh").mkdir()
    _known_hosts(home / ".ssh" / "known_hosts", sshd_server.known_hosts_line())
    result = await GitOpsWriter.for_settings(Pygit2GitOps.from_settings(settings), settings).deploy(change())
    assert _head(remote) == result.sha != seed

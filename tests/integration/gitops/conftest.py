"""GitOps remotes for the writer's tests: seeded bare repositories on disk, a ``git daemon`` that accepts pushes,
a smart-HTTP server that wants Basic auth (git_http.py) and a real sshd (sshd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.gitops.git_http import GitHttpServer
from tests.integration.gitops.sshd import SshServer, start_sshd

from forge.embedded.gitops import create_gitops_repository
from forge.embedded.process import ServiceProcess, free_port, start_service, tcp_ready


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare GitOps repository seeded like the embedded one (dev, staging, production)."""
    return Path(create_gitops_repository(tmp_path / "remote.git"))


@pytest.fixture(scope="session")
def pushable_git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """``git daemon`` with receive-pack enabled (the shared ``git_daemon`` fixture is read-only)."""
    base = tmp_path_factory.mktemp("gitops-served")
    port = free_port()
    argv = [
        "git",
        "daemon",
        "--listen=127.0.0.1",
        f"--port={port}",
        "--reuseaddr",
        "--export-all",
        "--enable=receive-pack",
        f"--base-path={base}",
        str(base),
    ]
    proc = start_service(
        "git-daemon-gitops",
        argv,
        url=f"git://127.0.0.1:{port}/",
        ready=tcp_ready(port),
        log=base.with_name(f"{base.name}.log"),
    )
    proc.extra["base_dir"] = str(base)
    yield proc
    proc.stop()


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    """A smart-HTTP server wanting Basic auth (user ``forge``, password ``s3cret-token``) serving a seeded
    ``gitops.git``."""
    root = tmp_path / "served"
    create_gitops_repository(root / "gitops.git")
    server = GitHttpServer(root, "forge", "s3cret-token")
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One OpenSSH server for the session (host key, client keys ``right_key``/``wrong_key``); each test
    serves its own repository (``SshServer.repository``)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()

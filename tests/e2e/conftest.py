"""The whole platform as real processes: forge-api, forge-controller and forge-worker on real services."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forge.embedded.process import ServiceProcess, binary, free_port, http_ready, start_service
from forge.testing.git_daemon import start_git_daemon
from forge.testing.platform import Platform
from forge.testing.postgres import create_database


@contextlib.contextmanager
def running_platform(
    home: Path, database_url: str, nats: ServiceProcess, s3: ServiceProcess, **extra_env: str
) -> Iterator[Platform]:
    """forge-api, forge-controller and the discovery and CI workers on the given services."""
    git_daemon = start_git_daemon(home / "served")
    port = free_port()
    env = {
        "FORGE_DATABASE__URL": database_url,
        "FORGE_NATS__URL": nats.url,
        "FORGE_OBJECTS__ENDPOINT": s3.url,
        "FORGE_OBJECTS__ACCESS_KEY": s3.extra["access_key"],
        "FORGE_OBJECTS__SECRET_KEY": s3.extra["secret_key"],
        "FORGE_OBJECTS__BUCKET": f"e2e-{uuid.uuid4().hex[:8]}",
        "FORGE_GIT__CACHE_DIR": str(home / "git-cache"),
        "FORGE_API__PORT": str(port),
        "FORGE_API__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "FORGE_API__ALLOW_LOCAL_CLONE_URLS": "true",  # local mirrors and git daemons
        "FORGE_CI__WORK_DIR": str(home / "work"),
        "FORGE_WORKER__ACK_WAIT": "2",
        "FORGE_WORKER__HEARTBEAT": "0.5",
        "FORGE_WORKER__FETCH_WAIT": "0.2",
        **extra_env,
    }
    platform = Platform(
        api_url=f"http://127.0.0.1:{port}",
        env=env,
        cache_dir=home / "git-cache",
        logs=home / "logs",
        git_base=home / "served",
        git_url=git_daemon.url,
    )
    try:
        start_api(platform)
        platform.start("controller", ["forge-controller"])
        platform.start_worker()
        platform.start_worker("worker-ci", "ci")
        platform.start("worker-release", ["forge-worker", "artifact", "release"])
        yield platform
    finally:
        for proc in platform.processes.values():
            proc.stop()
        git_daemon.stop()


def start_api(platform: Platform) -> None:
    """Start (or start again) forge-api and wait until it is ready."""
    platform.processes["api"] = start_service(
        "api",
        [binary("forge-api")],
        url=platform.api_url,
        ready=http_ready(f"{platform.api_url}/readyz"),
        log=platform.logs / "api.log",
        env=platform.env,
    )


@pytest.fixture
def client(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.api_url, timeout=10, headers=platform.auth_headers()) as client:
        yield client


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    nats_server: ServiceProcess,
    s3_server: ServiceProcess,
    postgres_server: ServiceProcess,
) -> Iterator[Platform]:
    database = create_database(postgres_server.url, f"e2e_{uuid.uuid4().hex[:12]}")
    with running_platform(tmp_path_factory.mktemp("platform"), database, nats_server, s3_server) as platform:
        yield platform

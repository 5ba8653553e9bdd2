"""Outages delay records but never falsify them: PostgreSQL or the API down in the middle of a run.

Workers report on JetStream and the controller alone writes PostgreSQL, so while PostgreSQL is
down the steps keep running (the local engine and the workers need no database), their events
wait in the stream, and the run ends ``success`` with every step ``success`` once PostgreSQL is
back. The API is on no step's path at all. This module has a PostgreSQL server of its own: it
kills it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forge.embedded.postgres import PostgresProcess, start_postgres
from forge.embedded.process import ServiceProcess
from forge.testing.platform import Platform
from forge.testing.postgres import create_database

from .conftest import running_platform, start_api
from .support import make_repo, step_map, wait_until

HELD = """name: held
phases:
  check:
    steps:
      - {{name: wait, run: "echo started > {started}; while [ ! -f {release} ]; do sleep 0.1; done; echo released"}}
  test:
    steps:
      - {{name: one, run: "echo one"}}
      - {{name: two, run: "echo two"}}
"""


class _Database:
    """The module's own PostgreSQL: it can be killed and started again on the same port and data."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.server: PostgresProcess = start_postgres(data)
        self.port = int(self.server.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.server.pid, 0)
            except ProcessLookupError:
                return
            if self.server._popen is not None:
                self.server._popen.poll()
            time.sleep(0.02)
        raise AssertionError("PostgreSQL survived SIGKILL")

    def start(self) -> None:
        self.server = start_postgres(self.data, self.port)

    def stop(self) -> None:
        self.server.stop()
        if os.geteuid() == 0 and (self.data / "pgdata").is_symlink():  # a cluster relocated under /var/tmp
            shutil.rmtree((self.data / "pgdata").resolve().parent, ignore_errors=True)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Database]:
    db = _Database(tmp_path_factory.mktemp("outage-pg"))
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    database: _Database,
    nats_server: ServiceProcess,
    s3_server: ServiceProcess,
) -> Iterator[Platform]:
    url = create_database(database.server.url, f"outage_{uuid.uuid4().hex[:12]}")
    # The held step waits for a file the test creates on the host: steps here see the host (no sandbox).
    home = tmp_path_factory.mktemp("outage-platform")
    with running_platform(home, url, nats_server, s3_server, FORGE_CI__SANDBOX="off") as platform:
        yield platform


def _get(client: httpx.Client, url: str) -> dict[str, Any] | None:
    """A GET that may fail while a dependency of the API is down."""
    try:
        response = client.get(url)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def _held_run(platform: Platform, client: httpx.Client, tmp_path: Path) -> tuple[str, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    name, sha = make_repo(platform, client, {"held/.forge/project.yaml": HELD.format(started=started, release=release)})
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
    wait_until(lambda: step_map(client, run_id).get("check/held/wait", {}).get("status") == "running", platform)
    return run_id, release


def _finished(client: httpx.Client, run_id: str, platform: Platform) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = _get(client, f"/v1/runs/{run_id}")
        if run is not None and run["status"] in {"success", "failed", "cancelled"}:
            return run
        time.sleep(0.2)
    pytest.fail(f"run {run_id} did not finish\n{platform.log_tail()}")


def _all_succeeded(client: httpx.Client, run_id: str, platform: Platform) -> None:
    run = _finished(client, run_id, platform)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    steps = step_map(client, run_id)
    assert {key: (s["status"], s["exit_code"]) for key, s in steps.items()} == {
        "check/held/wait": ("success", 0),
        "test/held/one": ("success", 0),
        "test/held/two": ("success", 0),
    }


def test_postgres_down_mid_run_delays_the_records_and_the_run_succeeds(
    platform: Platform, database: _Database, client: httpx.Client, tmp_path: Path
) -> None:
    run_id, release = _held_run(platform, client, tmp_path)
    database.kill()
    release.touch()  # the held step ends, and the next ones run, while nothing can be written
    time.sleep(5)
    assert _get(client, f"/v1/runs/{run_id}") is None  # the API cannot read either
    database.start()
    _all_succeeded(client, run_id, platform)


def test_api_down_mid_run_changes_nothing(platform: Platform, client: httpx.Client, tmp_path: Path) -> None:
    run_id, release = _held_run(platform, client, tmp_path)
    platform.kill("api")
    release.touch()
    time.sleep(3)  # the steps finish with nobody to report to but JetStream
    start_api(platform)
    _all_succeeded(client, run_id, platform)

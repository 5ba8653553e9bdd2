"""A commit becomes a discovered run through the API, PostgreSQL, the controller, NATS, a worker,
git (served by git daemon) and S3: every component is a real process."""

from __future__ import annotations

import fcntl
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio

from forge.testing.gitrepos import commit_files
from forge.testing.platform import Platform

PROJECT = "name: {name}\n{extra}phases:\n  test:\n    steps:\n      - name: unit\n        run: 'true'\n"


def _wait_run(
    client: httpx.Client, run_id: str, platform: Platform, *, timeout: float = 60
) -> tuple[dict[str, Any], list[str]]:
    """Poll the run until its discovery is final; also return the discovery statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/v1/runs/{run_id}").json()
        if not seen or seen[-1] != run["discovery_status"]:
            seen.append(run["discovery_status"])
        if run["discovery_status"] in {"success", "failed"}:
            return run, seen
        time.sleep(0.05)
    pytest.fail(f"run {run_id} stuck in {seen}\n{platform.log_tail()}")


def _new_repo(platform: Platform, client: httpx.Client, files: dict[str, str | None]) -> tuple[str, Path, str]:
    name = f"acme/mono-{uuid.uuid4().hex[:6]}"
    path = platform.git_base / f"{name}.git"
    sha = commit_files(path, files, "initial")
    resp = client.post("/v1/repositories", json={"name": name, "clone_url": f"{platform.git_url}{name}.git"})
    assert resp.status_code == 201, resp.text
    return name, path, sha


def test_a_commit_becomes_a_discovered_run(platform: Platform, client: httpx.Client) -> None:
    name, path, first = _new_repo(
        platform,
        client,
        {
            ".forge/repo.yaml": "affects_all: [uv.lock]\n",
            "libs/core/.forge/project.yaml": PROJECT.format(name="core", extra=""),
            "libs/core/lib.py": "x = 1\n",
            "svc/api/.forge/project.yaml": PROJECT.format(name="api", extra="depends_on: [core]\n"),
            "svc/web/.forge/project.yaml": PROJECT.format(name="web", extra=""),
        },
    )
    second = commit_files(path, {"libs/core/lib.py": "x = 2\n"}, "touch core")

    created = client.post(
        "/v1/runs", json={"repository": name, "commit_sha": second, "base_sha": first, "branch": "main"}
    )
    assert created.status_code == 201, created.text
    assert (created.json()["status"], created.json()["discovery_status"]) == ("pending", "pending")
    run, seen = _wait_run(client, created.json()["id"], platform)

    assert seen[0] == "pending"
    assert seen[-1] == "success", run["error"]
    discovery = run["discovery"]
    assert (discovery["commit"], discovery["base"]) == (second, first)
    assert [p["name"] for p in discovery["projects"]] == ["api", "core", "web"]
    assert {a["project"]: a["reasons"] for a in discovery["affected"]} == {
        "api": ["depends_on: core"],
        "core": ["changed: libs/core/lib.py"],
    }
    assert discovery["phase_groups"] == [{"group": 2, "phases": ["test"]}]

    settings = platform.env
    s3 = Minio(
        settings["FORGE_OBJECTS__ENDPOINT"],
        access_key=settings["FORGE_OBJECTS__ACCESS_KEY"],
        secret_key=settings["FORGE_OBJECTS__SECRET_KEY"],
        secure=False,
    )
    stored = s3.get_object(settings["FORGE_OBJECTS__BUCKET"], run["discovery_key"])
    try:
        assert b'"commit":"' + second.encode() in stored.read()
    finally:
        stored.close()
        stored.release_conn()

    again = client.post(
        "/v1/runs", json={"repository": name, "commit_sha": second, "base_sha": first, "branch": "main"}
    )
    assert (again.status_code, again.json()["id"]) == (200, run["id"])  # keyed by repository, commit and ref
    listed = client.get("/v1/runs", params={"repository": name}).json()
    assert listed["total"] == 1


def test_invalid_configuration_fails_the_run_with_every_error(platform: Platform, client: httpx.Client) -> None:
    name, _, sha = _new_repo(
        platform,
        client,
        {
            "a/.forge/project.yaml": "name: a\nphases:\n  deploy:\n    steps: [{name: x, run: 'true'}]\n",
            "b/.forge/project.yaml": "name: b\ndepends_on: [nobody]\n",
        },
    )
    created = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()
    run, _ = _wait_run(client, created["id"], platform)
    assert (run["status"], run["discovery_status"]) == ("failed", "failed")
    assert "a/.forge/project.yaml:3: phases.deploy:" in run["error"]
    assert "b/.forge/project.yaml:2: depends_on" in run["error"]


@contextmanager
def _holding(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def _ack_pending(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("pipeline-discovery", "discovery-consumer")
        return int(info.num_ack_pending)
    finally:
        await nc.close()


def test_a_worker_killed_mid_job_loses_nothing(platform: Platform, client: httpx.Client) -> None:
    import asyncio

    name, _, sha = _new_repo(platform, client, {"p/.forge/project.yaml": PROJECT.format(name="p", extra="")})
    owner, repo = name.split("/")
    # Hold the mirror's lock so the worker blocks inside the job (in sync), sending +WPI heartbeats.
    with _holding(platform.cache_dir / owner / f"{repo}.git.lock"):
        run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
        deadline = time.monotonic() + 30
        while asyncio.run(_ack_pending(platform.env["FORGE_NATS__URL"])) == 0:
            assert time.monotonic() < deadline, platform.log_tail()
            time.sleep(0.1)
        time.sleep(3)  # longer than ack_wait (2 s): the heartbeats keep the job from being redelivered
        assert client.get(f"/v1/runs/{run_id}").json()["discovery_status"] == "running"
        victim = platform.processes.pop("worker")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.stop()
    platform.start_worker("worker-2")
    run, _ = _wait_run(client, run_id, platform)
    assert run["discovery_status"] == "success", run["error"]
    assert [p["name"] for p in run["discovery"]["projects"]] == ["p"]

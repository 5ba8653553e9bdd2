"""Helpers of the e2e tests: a repository served by the git daemon, and waiting on the API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from forge.testing.gitrepos import commit_files
from forge.testing.platform import Platform

FINAL = {"success", "failed", "cancelled"}
HELLO = Path(__file__).parents[2] / "examples" / "monorepo" / "services" / "hello"


def hello_files(message: str, *, manual: bool = False) -> dict[str, str | None]:
    """The example monorepo's released service ``hello`` alone (no library, a stand-in unit test),
    printing ``message``; ``manual`` also lets it be released on request."""
    project = (HELLO / ".forge" / "project.yaml").read_text().replace("depends_on: [greeting]\n", "")
    project = project.replace("PYTHONPATH=../../libs/greeting python3 -m unittest discover -s tests -t .", "echo unit")
    if manual:
        project = project.replace("    - branch: main", "    - branch: main\n    - manual: true")
    return {
        "services/hello/.forge/project.yaml": project,
        "services/hello/build_image.py": (HELLO / "build_image.py").read_text(),
        "services/hello/main.py": f"print({message!r})\n",
    }


def make_repo(platform: Platform, client: httpx.Client, files: dict[str, str | None]) -> tuple[str, str]:
    name = f"acme/pipe-{uuid.uuid4().hex[:6]}"
    sha = commit_files(platform.git_base / f"{name}.git", files, "initial")
    resp = client.post("/v1/repositories", json={"name": name, "clone_url": f"{platform.git_url}{name}.git"})
    assert resp.status_code == 201, resp.text
    return name, sha


def wait_run(client: httpx.Client, run_id: str, platform: Platform, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] in FINAL:
            return run
        time.sleep(0.1)
    pytest.fail(f"run {run_id} did not finish\n{platform.log_tail()}")


def wait_until(condition: Callable[[], bool], platform: Platform, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, platform.log_tail()
        time.sleep(0.1)


def step_map(client: httpx.Client, run_id: str) -> dict[str, dict[str, Any]]:
    executions = client.get(f"/v1/runs/{run_id}/executions").json()
    return {
        f"{phase['name']}/{task['project']}/{step['name']}": step
        for phase in executions["phases"]
        for task in phase["tasks"]
        for step in task["steps"]
    }


def step_log(client: httpx.Client, run_id: str, step: dict[str, Any]) -> str:
    body = client.get(f"/v1/runs/{run_id}/steps/{step['id']}/logs").json()
    if body["complete"]:
        return httpx.get(body["url"], timeout=10).text
    return str(body["content"])

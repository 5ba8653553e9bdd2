"""Whole pipelines on the embedded platform: controller + local engine + CI workers, all real processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from forge.cli.main import cli
from forge.embedded.process import ServiceProcess
from forge.testing.platform import Platform
from forge.testing.postgres import create_database

from .conftest import running_platform
from .support import make_repo, step_log, step_map, wait_run, wait_until

LIB = """name: lib
phases:
  check:
    steps:
      - {name: lint, run: "echo linting $FORGE_PROJECT && test -f lib.py"}
  test:
    steps:
      - {name: unit, run: "python3 -c 'import lib; assert lib.VALUE == 2' && echo unit ok"}
"""
APP = """name: app
depends_on: [lib]
phases:
  build:
    steps:
      - {name: bundle, run: "mkdir -p dist && echo built > dist/out.txt && cat dist/out.txt"}
  test:
    steps:
      - {name: unit, run: "echo app tests; exit ${FAIL_WITH:-0}", env: {FAIL_WITH: "%s"}}
      - {name: after, run: "echo never printed on failure"}
"""


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    nats_server: ServiceProcess,
    s3_server: ServiceProcess,
    postgres_server: ServiceProcess,
) -> Iterator[Platform]:
    """Steps here signal the test through files on the host (started, release): no sandbox. The sandbox's
    own tests (tests/integration/ci/test_sandbox.py) and the release e2e run sandboxed."""
    database = create_database(postgres_server.url, f"e2e_{uuid.uuid4().hex[:12]}")
    home = tmp_path_factory.mktemp("platform")
    with running_platform(home, database, nats_server, s3_server, FORGE_CI__SANDBOX="off") as platform:
        yield platform


def test_a_pipeline_runs_every_affected_step_in_order(platform: Platform, client: httpx.Client) -> None:
    name, sha = make_repo(
        platform,
        client,
        {
            "lib/.forge/project.yaml": LIB,
            "lib/lib.py": "VALUE = 2\n",
            "app/.forge/project.yaml": APP % "0",
        },
    )
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha, "branch": "main"}).json()["id"]
    run = wait_run(client, run_id, platform)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    steps = step_map(client, run_id)
    assert set(steps) == {"check/lib/lint", "test/lib/unit", "build/app/bundle", "test/app/unit", "test/app/after"}
    assert {s["status"] for s in steps.values()} == {"success"}
    assert all(s["exit_code"] == 0 and s["attempts"] == 1 for s in steps.values())
    # group 2 (test) starts only after group 1 (check, build) finished
    details = client.get(f"/v1/runs/{run_id}/executions").json()
    by_phase = {p["name"]: p for p in details["phases"]}
    assert {p["status"] for p in by_phase.values()} == {"success"}
    assert "linting lib" in step_log(client, run_id, steps["check/lib/lint"])
    assert "built" in step_log(client, run_id, steps["build/app/bundle"])
    assert "unit ok" in step_log(client, run_id, steps["test/lib/unit"])

    runner = CliRunner(env={"FORGE_TOKEN": platform.token()})
    one = runner.invoke(cli, ["logs", run_id, "check/lib/lint", "--api", platform.api_url])
    assert one.exit_code == 0, one.output
    assert "linting lib" in one.stdout
    followed = runner.invoke(cli, ["logs", run_id, steps["build/app/bundle"]["id"], "-f", "--api", platform.api_url])
    assert followed.exit_code == 0, followed.output
    assert "built" in followed.stdout
    every = runner.invoke(cli, ["logs", run_id, "--api", platform.api_url])
    assert "==> check/lib/lint <==" in every.stderr
    assert "linting lib" in every.stdout
    assert "unit ok" in every.stdout
    unknown = runner.invoke(cli, ["logs", run_id, "nope/x/y", "--api", platform.api_url])
    assert unknown.exit_code == 1
    assert "has no step 'nope/x/y'" in unknown.stderr


def test_a_failing_step_fails_the_run_and_skips_the_rest(platform: Platform, client: httpx.Client) -> None:
    name, sha = make_repo(
        platform,
        client,
        {
            "lib/.forge/project.yaml": LIB,
            "lib/lib.py": "VALUE = 2\n",
            "app/.forge/project.yaml": APP % "3",
        },
    )
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
    run = wait_run(client, run_id, platform)
    assert run["status"] == "failed"
    steps = step_map(client, run_id)
    assert (steps["test/app/unit"]["status"], steps["test/app/unit"]["exit_code"]) == ("failed", 3)
    assert steps["test/app/after"]["status"] == "skipped"
    assert steps["check/lib/lint"]["status"] == "success"
    log = step_log(client, run_id, steps["test/app/unit"])
    assert "app tests" in log
    assert "exited with code 3" in log


def test_deleting_a_run_cancels_it_and_kills_its_step(platform: Platform, client: httpx.Client, tmp_path: Any) -> None:
    marker = tmp_path / "started"
    project = f"""name: slow
phases:
  check:
    steps:
      - {{name: wait, run: "echo $$ > {marker} && sleep 300"}}
  test:
    steps:
      - {{name: later, run: "true"}}
"""
    name, sha = make_repo(platform, client, {"slow/.forge/project.yaml": project})
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
    wait_until(lambda: marker.exists() and bool(marker.read_text().strip()), platform)
    pid = int(marker.read_text())
    # the platform learns a step runs from its started event, within about a second
    wait_until(lambda: step_map(client, run_id)["check/slow/wait"]["status"] == "running", platform)

    resp = client.delete(f"/v1/runs/{run_id}")
    assert resp.status_code == 202
    run = wait_run(client, run_id, platform)
    assert run["status"] == "cancelled"
    steps = step_map(client, run_id)
    assert steps["check/slow/wait"]["status"] == "cancelled"
    assert steps["test/slow/later"]["status"] == "skipped"
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, "the cancelled step's process is still running"
        time.sleep(0.1)
    assert client.delete(f"/v1/runs/{run_id}").status_code == 409


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_ci_worker_killed_mid_step_loses_nothing(platform: Platform, client: httpx.Client, tmp_path: Any) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    project = f"""name: held
phases:
  test:
    steps:
      - {{name: wait, run: "echo attempt >> {started}; while [ ! -f {release} ]; do sleep 0.1; done; echo released"}}
"""
    name, sha = make_repo(platform, client, {"held/.forge/project.yaml": project})
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
    wait_until(started.exists, platform)
    platform.kill("worker-ci")
    platform.start_worker("worker-ci", "ci")  # JetStream redelivers the unacked job to it
    wait_until(lambda: len(started.read_text().splitlines()) >= 2, platform)
    release.touch()
    run = wait_run(client, run_id, platform)
    assert run["status"] == "success", run["error"]
    step = step_map(client, run_id)["test/held/wait"]
    assert (step["status"], step["exit_code"]) == ("success", 0)
    assert "released" in step_log(client, run_id, step)


def test_a_controller_killed_mid_run_resumes_it(platform: Platform, client: httpx.Client, tmp_path: Any) -> None:
    """The local engine's workflow dies with the controller; the new controller resubmits it, and the
    step that kept running in its worker is awaited, not run twice."""
    started, release = tmp_path / "started", tmp_path / "release"
    project = f"""name: resumed
phases:
  check:
    steps:
      - {{name: wait, run: "echo attempt >> {started}; while [ ! -f {release} ]; do sleep 0.1; done"}}
  test:
    steps:
      - {{name: after, run: "echo after"}}
"""
    name, sha = make_repo(platform, client, {"resumed/.forge/project.yaml": project})
    run_id = client.post("/v1/runs", json={"repository": name, "commit_sha": sha}).json()["id"]
    wait_until(started.exists, platform)
    first_workflow = client.get(f"/v1/runs/{run_id}").json()["workflow_name"]
    platform.kill("controller")
    platform.start("controller", ["forge-controller"])
    wait_until(lambda: client.get(f"/v1/runs/{run_id}").json()["workflow_name"] != first_workflow, platform)
    release.touch()
    run = wait_run(client, run_id, platform)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    assert started.read_text().splitlines() == ["attempt"]  # the step ran once
    steps = step_map(client, run_id)
    assert {k: s["status"] for k, s in steps.items()} == {
        "check/resumed/wait": "success",
        "test/resumed/after": "success",
    }

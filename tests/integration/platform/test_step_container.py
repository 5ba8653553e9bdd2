"""``forge-step dispatch`` as the real executable Argo would run, against a worker on real services."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

from forge.adapters.nats_bus import NatsBus
from forge.embedded.process import ServiceProcess, binary
from forge.testing.gitrepos import commit_files

from .support import PROJECT, Counting


async def _forge_step(nats_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        binary("forge-step"),
        "dispatch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"FORGE_NATS__URL": nats_url, "PATH": str(Path(sys.executable).parent)},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _args(path: Path, sha: str, run: str, *extra: str) -> list[str]:
    payload = json.dumps({"clone_url": str(path), "branch": "main"})
    return [
        "--job-type",
        "discovery",
        "--key",
        f"discovery.{run}",
        "--run-id",
        run,
        "--repository",
        "acme/mono",
        "--commit",
        sha,
        "--payload",
        payload,
        *extra,
    ]


async def test_dispatch_prints_the_result_and_a_restart_reuses_it(
    tmp_path: Path, own_nats: ServiceProcess, start_worker: Any, handler: Counting, bus: NatsBus
) -> None:
    path = tmp_path / "mono.git"
    sha = commit_files(path, {"p/.forge/project.yaml": PROJECT.format(name="p")})
    run = str(uuid4())
    output = tmp_path / "result.json"
    async with start_worker():
        code, out, err = await _forge_step(own_nats.url, *_args(path, sha, run, "--output", str(output)))
    assert code == 0, err
    result = json.loads(out)
    assert result["success"]
    assert (result["data"]["projects"], result["data"]["affected"]) == (1, 1)
    assert result["data"]["object_key"] == f"pipeline-runs/{run}/discovery.json"
    assert json.loads(output.read_text()) == result

    code, again, err = await _forge_step(own_nats.url, *_args(path, sha, run, "--timeout", "2"))
    assert code == 0, err
    assert json.loads(again) == result
    assert handler.calls == [f"discovery.{run}"]


async def test_failed_job_exits_1_and_bad_arguments_exit_2(
    tmp_path: Path, own_nats: ServiceProcess, start_worker: Any
) -> None:
    path = tmp_path / "bad.git"
    sha = commit_files(path, {"p/.forge/project.yaml": "name: P\n"})
    async with start_worker():
        code, out, err = await _forge_step(own_nats.url, *_args(path, sha, str(uuid4())))
    assert code == 1
    assert json.loads(out)["error"]["code"] == "invalid_config"
    assert "p/.forge/project.yaml:1: name:" in err

    code, out, err = await _forge_step(own_nats.url, *_args(path, "not-a-sha", "not-a-uuid"))
    assert code == 2
    assert out == ""
    assert "invalid" in err

    code, out, err = await _forge_step(own_nats.url, *_args(path, sha, str(uuid4()))[:-1], "{broken json")
    assert code == 2
    assert "Traceback" not in err

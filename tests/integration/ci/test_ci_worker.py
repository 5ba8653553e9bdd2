"""CI jobs through the dispatcher, JetStream, the worker runtime, git and S3 (all real).

Steps run as real processes; what a step sees (its environment, its checkout, its secrets) it
writes into ``out``, a directory outside the checkout, for the test to read afterwards.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import Result
from forge.embedded.process import free_port
from forge.jobs.dispatch import dispatch
from forge.logs import LogReader, log_key
from forge.settings import CiSettings

from .conftest import StartWorker
from .support import alive, ci_job, read_pid, standard_repo

SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _failure(result: Result) -> dict[str, Any]:
    assert not result.success
    assert result.error is not None
    return {"code": result.error.code, "permanent": result.error.permanent, **result.error.details}


async def test_run_step_log_is_readable_while_it_runs_and_stored_after(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    go = out / "go"
    script = 'echo "step started"; while [ ! -f "$GO" ]; do sleep 0.05; done; echo "step finished"'
    job = ci_job(url, sha, script, env={"GO": str(go)})
    key = log_key(job.run_id, "test", "svc", "unit")
    reader = LogReader(objects)
    async with start_worker(), asyncio.TaskGroup() as tasks:
        pending = tasks.create_task(dispatch(bus, job, timeout=60))
        async with asyncio.timeout(30):
            while b"step started\n" not in (partial := await reader.read(key))[0]:
                await asyncio.sleep(0.1)
        assert partial[1] is False  # still running: the chunks so far
        assert b"step finished\n" not in partial[0]
        go.touch()
        result = await pending
    assert result.success, result.error
    assert result.data is not None
    assert result.data["exit_code"] == 0
    assert result.data["attempt"] == 1
    assert result.data["logs_key"] == key
    assert result.data["duration_seconds"] > 0
    text, complete = await reader.read(key)
    assert complete
    assert b"forge: test/svc/unit attempt 1 of 1 at acme/mono@" in text
    assert b"step started\n" in text
    assert b"step finished\n" in text
    assert await objects.list(f"{key}.parts/") == []


async def test_failing_step_is_a_permanent_failed_result_with_its_exit_code(
    repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    job = ci_job(url, sha, "echo boom; exit 3")
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["code"] == "step_failed"
    assert failure["permanent"] is True
    assert failure["exit_code"] == 3
    assert failure["attempt"] == 1
    assert result.error is not None
    assert "exited with code 3" in result.error.message
    log = await objects.get(failure["logs_key"])
    assert b"boom\n" in log
    assert b"forge: step exited with code 3" in log


async def test_timeout_kills_the_whole_process_group(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    script = 'sleep 300 & echo $! > "$OUT/child"; echo $$ > "$OUT/main"; echo waiting; sleep 300'
    job = ci_job(url, sha, script, env={"OUT": str(out)}, timeout_seconds=1)
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["exit_code"] == 124
    assert result.error is not None
    assert "timed out after 1s" in result.error.message
    log = await objects.get(failure["logs_key"])
    assert b"waiting\n" in log
    assert b"forge: step timed out after 1s; the process group was killed" in log
    pids = [read_pid(out / "main"), read_pid(out / "child")]
    async with asyncio.timeout(5):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.05)


async def test_secret_values_reach_the_step_but_never_the_log(
    repo: tuple[str, str],
    out: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    assert ci_settings.secrets_dir is not None
    (ci_settings.secrets_dir / "API_TOKEN").write_text(SECRET + "\n")
    url, sha = repo
    # printf splits the value over two writes, so the masker sees it across a chunk boundary
    script = (
        'echo "token=$API_TOKEN"; printf "%s" "${API_TOKEN%????}"; sleep 0.3; echo "${API_TOKEN#${API_TOKEN%????}}";'
        ' printf "%s" "$API_TOKEN" > "$OUT/secret"'
    )
    job = ci_job(url, sha, script, env={"OUT": str(out)}, secrets=["API_TOKEN"])
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    assert result.data is not None
    log = await objects.get(result.data["logs_key"])
    assert SECRET.encode() not in log
    assert b"token=***\n***\n" in log
    assert (out / "secret").read_text() == SECRET


async def test_unknown_secret_fails_the_step_with_a_clear_message(
    repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    job = ci_job(url, sha, "echo should not run", secrets=["GHOST"])
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["code"] == "step_failed"
    assert failure["exit_code"] is None
    assert result.error is not None
    assert "secret GHOST not found" in result.error.message
    log = await objects.get(failure["logs_key"])
    assert b"forge: secret GHOST not found" in log
    assert b"should not run" not in log


async def test_step_gets_a_minimal_environment_plus_its_own(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus
) -> None:
    url, sha = repo
    job = ci_job(url, sha, 'env > "$OUT/env"', env={"OUT": str(out), "GREETING": "hello world"})
    worker_env = {"PATH": "/usr/bin:/bin", "HOME": "/home/ci", "LANG": "C.UTF-8", "LEAKY": "worker-only"}
    async with start_worker(environ=worker_env):
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line)
    assert env["GREETING"] == "hello world"
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["HOME"] == "/home/ci"
    assert env["CI"] == "true"
    assert env["FORGE_COMMIT_SHA"] == sha
    assert env["FORGE_RUN_ID"] == str(job.run_id)
    assert "LEAKY" not in env


async def test_earthly_step_command_line(
    repo: tuple[str, str],
    out: Path,
    tmp_path: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
) -> None:
    """A stand-in ``earthly`` script on PATH records its argv, environment and directory, then exits 0.

    Earthly itself is not installed here; the stand-in proves the command line the worker builds.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "earthly"
    fake.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD/argv"\nenv > "$RECORD/env"\npwd > "$RECORD/pwd"\n'
        'echo "earthly says $NPM_TOKEN"\nexit 0\n'
    )
    fake.chmod(0o755)
    assert ci_settings.secrets_dir is not None
    (ci_settings.secrets_dir / "NPM_TOKEN").write_text(SECRET)
    url, sha = repo
    job = ci_job(
        url, sha, "build", action="earthly", args=["--VERSION=1.2"], env={"RECORD": str(out)}, secrets=["NPM_TOKEN"]
    )
    async with start_worker(environ={"PATH": f"{bindir}:/usr/bin:/bin"}):
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    argv = (out / "argv").read_text().splitlines()
    assert argv == ["--ci", "--secret", "NPM_TOKEN", "+build", "--VERSION=1.2"]
    assert f"NPM_TOKEN={SECRET}" in (out / "env").read_text().splitlines()
    assert (out / "pwd").read_text().strip().endswith(f"/{job.id}/svc")


async def test_missing_earthly_fails_the_step_with_a_clear_message(
    repo: tuple[str, str], tmp_path: Path, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    job = ci_job(url, sha, "build", action="earthly")
    async with start_worker(environ={"PATH": str(tmp_path / "empty-bin")}):
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["exit_code"] == 127
    assert result.error is not None
    assert "executable 'earthly' not found on PATH" in result.error.message
    assert b"forge: executable 'earthly' not found on PATH" in await objects.get(failure["logs_key"])


async def test_step_runs_in_a_private_checkout_of_the_commit_that_is_removed_after(
    repo: tuple[str, str], out: Path, ci_settings: CiSettings, start_worker: StartWorker, bus: NatsBus
) -> None:
    url, sha = repo
    script = (
        'pwd > "$OUT/pwd"; ./tool.sh > "$OUT/tool"; test -x tool.sh && test -L link && readlink link > "$OUT/link";'
        ' cat link > "$OUT/data"; cat ../README.md > "$OUT/readme"; ls -A .. > "$OUT/root"'
    )
    job = ci_job(url, sha, script, env={"OUT": str(out)})
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    checkout = Path((out / "pwd").read_text().strip())
    assert checkout == (ci_settings.work_dir / str(job.id) / "svc").resolve()
    assert (out / "tool").read_text() == "tool ran\n"
    assert (out / "link").read_text() == "data.txt\n"
    assert (out / "data").read_text() == "payload\n"
    assert (out / "readme").read_text() == "root\n"
    assert (out / "root").read_text().split() == ["README.md", "svc"]  # no .git
    assert not checkout.parent.exists()
    assert [p.name for p in ci_settings.work_dir.iterdir()] == ["trees"]  # the shared tree stays for later steps


async def test_unreachable_repository_fails_transiently(start_worker: StartWorker, bus: NatsBus) -> None:
    job = ci_job(f"git://127.0.0.1:{free_port()}/nothing-here", "c" * 40, "true")
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["permanent"] is False
    assert failure["code"] == "service_unavailable"


async def test_processes_a_step_leaves_running_are_killed_even_in_their_own_session(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    script = 'sleep 300 & echo $! > "$OUT/child"; setsid sleep 300 & echo $! > "$OUT/escapee"; echo leaving'
    job = ci_job(url, sha, script, env={"OUT": str(out)})
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    assert result.data is not None
    log = await objects.get(result.data["logs_key"])
    assert b"forge: killed processes the step left running" in log
    pids = [read_pid(out / "child"), read_pid(out / "escapee")]
    async with asyncio.timeout(5):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.05)


async def test_step_starts_with_no_signal_ignored_or_blocked(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus
) -> None:
    url, sha = repo
    job = ci_job(url, sha, 'grep -E "^Sig(Ign|Blk):" /proc/self/status > "$OUT/signals"', env={"OUT": str(out)})
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    masks = dict(line.split(":\t") for line in (out / "signals").read_text().splitlines())
    assert masks == {"SigBlk": "0000000000000000", "SigIgn": "0000000000000000"}


async def test_timeout_kills_a_step_that_ignores_sigterm_with_its_whole_tree(
    repo: tuple[str, str], out: Path, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    script = (
        'trap "" TERM; sleep 300 & echo $! > "$OUT/child"; setsid sleep 300 & echo $! > "$OUT/escapee";'
        ' echo $$ > "$OUT/main"; wait'
    )
    job = ci_job(url, sha, script, env={"OUT": str(out)}, timeout_seconds=1)
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    failure = _failure(result)
    assert failure["exit_code"] == 124
    log = await objects.get(failure["logs_key"])
    assert b"Traceback" not in log
    pids = [read_pid(out / name) for name in ("main", "child", "escapee")]
    async with asyncio.timeout(5):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.05)

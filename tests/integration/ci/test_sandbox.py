"""Hostile steps in the sandbox (issue 7, item 1): each test checks the host, not the step's report.

Every test runs in both sandboxes the machine may give (``namespaces``: bubblewrap; ``uid``: a uid
per run without namespaces); a mode this machine cannot give is skipped. The worker runs in this
test process, so its environment is this process's: a canary platform credential put there must
reach no log, plain or base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import Result
from forge.jobs.dispatch import dispatch
from forge.settings import CiSettings
from forge.workflows.workers.sandbox import hand_over, resolve

from .conftest import StartWorker
from .support import ci_job, standard_repo, step_processes

CANARY = "postgresql://forge:canary-8d1f0c2b7a@db/forge"
ENCODED = (base64.b64encode(CANARY.encode()).decode()[:24], CANARY[::-1])


@pytest.fixture(params=["namespaces", "uid"])
def sandbox(request: pytest.FixtureRequest, ci_settings: CiSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The worker's settings with that sandbox, a work dir a step's uid may traverse, a canary credential."""
    if os.geteuid() != 0:
        pytest.skip("the uid per run and the root bubblewrap sandbox need a root worker")
    ci_settings.sandbox = request.param
    try:
        resolve(ci_settings)
    except RuntimeError as error:
        pytest.skip(str(error))
    work = Path(tempfile.mkdtemp(prefix="forge-sandbox-"))  # /tmp: every parent traversable, unlike pytest's
    work.chmod(0o711)
    ci_settings.work_dir = work / "work"
    monkeypatch.setenv("FORGE_DATABASE__URL", CANARY)
    try:
        yield str(request.param)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


@pytest.fixture
def token() -> str:
    return f"{random.randrange(10**8, 10**9)}"


async def _run(
    start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore, job_script: str, repo: tuple[str, str]
) -> tuple[Result, bytes]:
    url, sha = repo
    job = ci_job(url, sha, job_script, timeout_seconds=120)
    async with start_worker():
        result = await dispatch(bus, job, timeout=180)
    data = result.data if result.success else (result.error.details if result.error else None)
    assert data is not None, result
    return result, await objects.get(data["logs_key"])


def _no_secret(log: bytes) -> None:
    assert CANARY.encode() not in log
    for encoded in ENCODED:
        assert encoded.encode() not in log


async def test_a_step_reads_no_platform_environment_or_credential(
    sandbox: str, repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    script = (
        "env; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat $f 2>/dev/null | tr '\\0' ' '; echo; done;"
        " for f in /proc/[0-9]*/environ; do base64 < $f 2>/dev/null; rev < $f 2>/dev/null; done;"
        " cat /proc/$PPID/environ /proc/1/environ; ls /proc; id; true"
    )
    result, log = await _run(start_worker, bus, objects, script, repo)
    assert result.success, result.error
    _no_secret(log)
    assert f"pid {os.getpid()}" not in log.decode(errors="replace")


async def test_a_step_writes_nothing_outside_its_checkout_and_reads_no_other_run(
    sandbox: str,
    token: str,
    tmp_path: Path,
    ci_settings: CiSettings,
    repo: tuple[str, str],
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    other = ci_settings.work_dir / "another-run"  # another run's checkout beside this one's
    other.mkdir(parents=True)
    (other / "secret.txt").write_text(f"other run {token}\n")
    hand_over(other, ci_settings.sandbox_uid_base + 7)
    outside = [Path("/etc") / f"forge-escape-{token}", Path("/tmp") / f"forge-escape-{token}", tmp_path / "escape"]
    writes = "; ".join(f"echo x > {path}" for path in outside)
    script = (
        f'{writes}; echo x > "$FORGE_WORKSPACE/../escape-{token}"; echo x > /usr/escape-{token};'
        f' cat "$FORGE_WORKSPACE/../another-run/secret.txt"; ls "$FORGE_WORKSPACE/.." "$FORGE_WORKSPACE/../trees";'
        f' find / -name secret.txt 2>/dev/null; echo mine > "$FORGE_WORKSPACE/mine"; cat "$FORGE_WORKSPACE/mine"'
    )
    _, log = await _run(start_worker, bus, objects, script, repo)
    if sandbox == "uid":  # without a mount namespace the world-writable /tmp is shared (a stated limit)
        outside[1].unlink(missing_ok=True)
        outside.pop(1)
    assert not any(path.exists() for path in outside)
    assert not (ci_settings.work_dir / f"escape-{token}").exists()
    assert not Path(f"/usr/escape-{token}").exists()
    assert f"other run {token}".encode() not in log
    assert b"mine\n" in log  # its own checkout is writable
    _no_secret(log)


async def test_a_step_runs_unprivileged_and_cannot_touch_the_worker(
    sandbox: str, token: str, repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    script = f"setsid sleep 3011.{token} & kill -KILL -1; kill -KILL $PPID; kill -KILL {os.getpid()}; id -u; exit 0"
    result, log = await _run(start_worker, bus, objects, script, repo)
    assert os.getpid() > 0  # this process (the worker) is alive to see the result
    assert result.error is None or result.error.code == "step_failed"
    async with asyncio.timeout(10):
        while step_processes(f"3011.{token}"):
            await asyncio.sleep(0.05)
    _no_secret(log)


async def test_a_step_s_leftovers_die_in_the_sandbox_too(
    sandbox: str, token: str, repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    script = f"sleep 3011.{token} & (setsid sleep 3011.{token} </dev/null >/dev/null 2>&1 &); echo bg; exit 0"
    result, _ = await _run(start_worker, bus, objects, script, repo)
    assert result.success, result.error
    async with asyncio.timeout(10):
        while step_processes(f"3011.{token}"):
            await asyncio.sleep(0.05)

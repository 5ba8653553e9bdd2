"""A step ends when its main process exits; nothing it started outlives it (issue 7, item 3).

Each test checks the host, not the step's report: every process the step started carries a
unique ``sleep`` duration (``sleep 3011.<n>``), and ``/proc`` must hold none of them afterwards.
The step's timeout is long (10 minutes): a step that waited for its output pipe to close would
end as a timeout (exit 124), never as the success the test expects.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import cancel_subject
from forge.jobs.dispatch import dispatch

from .conftest import StartWorker
from .support import ci_job, standard_repo, step_processes

LONG = 600


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


@pytest.fixture
def token() -> str:
    """A ``sleep`` duration no other process on this machine uses."""
    return f"3011.{random.randrange(10**8, 10**9)}"


async def _none_left(token: str) -> None:
    """Until no process of the step is left (the kill is asynchronous); fails the test after 10 s."""
    async with asyncio.timeout(10):
        while step_processes(token):
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("sleep {t} & echo bg; exit 0", id="background-job-holding-stdout"),
        pytest.param("setsid sleep {t} & echo bg", id="setsid-child"),
        pytest.param("(setsid sh -c 'sleep {t}' </dev/null >/dev/null 2>&1 &); echo daemon", id="daemon"),
        pytest.param("nohup sleep {t} >/dev/null 2>&1 & echo nohup", id="nohup"),
    ],
)
async def test_a_step_ends_with_its_main_process_and_its_leftovers_are_killed(
    script: str,
    token: str,
    repo: tuple[str, str],
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    url, sha = repo
    job = ci_job(url, sha, script.format(t=token), timeout_seconds=LONG)
    async with start_worker():
        result = await dispatch(bus, job, timeout=120)
    assert result.success, result.error
    assert result.data is not None
    assert result.data["exit_code"] == 0
    await _none_left(token)
    log = await objects.get(result.data["logs_key"])
    assert b"forge: killed processes the step left running" in log


async def test_a_cancelled_run_leaves_no_process_of_its_step(
    token: str, repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus
) -> None:
    url, sha = repo
    script = f"setsid sleep {token} & (sleep {token} &); echo started; sleep {token}"
    job = ci_job(url, sha, script, timeout_seconds=LONG)
    async with start_worker():
        pending = asyncio.ensure_future(dispatch(bus, job, timeout=120))  # awaited below
        async with asyncio.timeout(30):
            while len(step_processes(token)) < 3:
                await asyncio.sleep(0.05)
        await bus.publish(cancel_subject(job.run_id), str(job.run_id).encode(), msg_id=f"cancel.{job.run_id}")
        result = await pending
    assert not result.success
    assert result.error is not None
    assert result.error.code == "cancelled"
    await _none_left(token)


async def test_a_timed_out_step_leaves_no_process(
    token: str, repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus
) -> None:
    url, sha = repo
    script = f"trap '' TERM; setsid sleep {token} & (sleep {token} &); sleep {token}"
    job = ci_job(url, sha, script, timeout_seconds=1)
    async with start_worker():
        result = await dispatch(bus, job, timeout=120)
    assert not result.success
    assert result.error is not None
    assert result.error.details["exit_code"] == 124
    await _none_left(token)

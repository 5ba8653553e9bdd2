"""A step's output past ``CiSettings.log_limit`` is dropped after one marker line; the step runs on
and the worker's memory stays bounded (issue 7, item 4). Checked on the host: the stored object and
the worker process's own allocations, not the step's report."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.jobs.dispatch import dispatch
from forge.settings import CiSettings

from .conftest import StartWorker
from .support import ci_job, standard_repo

MIB = 1024 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


async def test_output_past_the_limit_is_dropped_and_the_step_runs_to_its_end(
    repo: tuple[str, str], ci_settings: CiSettings, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    ci_settings.log_limit = 2 * MIB
    url, sha = repo
    # 64 MiB of output, then a line and an exit code that show the step ran to its end
    script = "head -c 67108864 /dev/zero | tr '\\0' x; echo; echo the end; exit 3"
    job = ci_job(url, sha, script, timeout_seconds=300)
    tracemalloc.start()
    try:
        async with start_worker():
            result = await dispatch(bus, job, timeout=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.success
    assert result.error is not None
    assert result.error.details["exit_code"] == 3  # not killed, not timed out: it ran on
    log = await objects.get(result.error.details["logs_key"])
    assert len(log) <= 2 * MIB + 200
    assert log.count(b"forge: the log reached its limit of 2 MiB") == 1
    assert b"\nthe end\n" not in log  # (the command line echoed at the top names it)
    assert peak < 24 * MIB  # the log kept (2 MiB) and its copies, never the 64 MiB printed

"""What a step's log costs in object store calls: one PUT for a short step, chunks only when due.

The store is the real one (S3 server) behind a counting wrapper scoped to the run's logs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.jobs.dispatch import dispatch
from forge.logs import LogReader, log_key
from forge.settings import CiSettings
from forge.workflows.workers.runtime import delivery

from .conftest import StartWorker
from .support import CountingObjects, ci_job, standard_repo


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


async def test_short_step_log_is_one_put_and_nothing_else(
    repo: tuple[str, str], ci_settings: CiSettings, start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    ci_settings.log_interval = 10.0  # the step ends long before a first upload is due
    url, sha = repo
    job = ci_job(url, sha, "echo short and sweet")
    counting = CountingObjects(objects, scope=f"pipeline-runs/{job.run_id}/")
    async with start_worker(store=counting):
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    assert dict(counting.calls) == {"put": 1}
    key = log_key(job.run_id, "test", "svc", "unit")
    assert b"short and sweet\n" in await objects.get(key)
    assert await objects.list(f"{key}.parts/") == []


async def test_long_step_writes_chunks_and_deletes_exactly_those(
    repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    job = ci_job(url, sha, "echo one; sleep 0.7; echo two")  # log_interval is 0.2 s
    counting = CountingObjects(objects, scope=f"pipeline-runs/{job.run_id}/")
    async with start_worker(store=counting):
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    parts = counting.calls["delete"]
    assert parts >= 1
    assert dict(counting.calls) == {"put": parts + 1, "delete": parts}  # no listing
    key = log_key(job.run_id, "test", "svc", "unit")
    assert await objects.list(f"{key}.parts/") == []
    log = await objects.get(key)
    assert log.endswith(b"\none\ntwo\n")


async def test_retry_attempt_starts_from_the_earlier_log_and_discards_leftovers(
    repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    url, sha = repo
    job = ci_job(url, sha, "echo second try", retries=1, attempt=1)
    key = log_key(job.run_id, "test", "svc", "unit")
    await objects.put(key, b"first attempt log\n")
    await objects.put(f"{key}.parts/0000000000", b"first attempt log\n")  # as if its close failed half-way
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    log = await objects.get(key)
    assert log.startswith(b"first attempt log\n")
    assert log.count(b"first attempt log") == 1
    assert b"second try\n" in log
    assert await objects.list(f"{key}.parts/") == []


@pytest.mark.parametrize("deliveries", [1, 2])
async def test_only_a_redelivery_takes_over_a_dead_worker_s_chunks(
    deliveries: int, repo: tuple[str, str], start_worker: StartWorker, objects: MinioObjectStore
) -> None:
    """A redelivery keeps the dead worker's partial log (a follower may have shown it), marks the boundary,
    then logs its own run; a first delivery never looks (nothing can be there)."""
    url, sha = repo
    job = ci_job(url, sha, "echo fresh")
    key = log_key(job.run_id, "test", "svc", "unit")
    await objects.put(f"{key}.parts/0000000000", b"partial output of a killed worker")
    counting = CountingObjects(objects, scope=f"pipeline-runs/{job.run_id}/")
    async with start_worker(store=counting) as handler:
        delivery.set(deliveries)  # what Worker.handle sets from JetStream's delivery count
        await handler(job)
    log = (await objects.get(key)).decode()
    leftovers = await objects.list(f"{key}.parts/")
    if deliveries == 1:
        assert counting.calls["list"] == 0
        assert "partial output" not in log
        assert len(leftovers) == 1
    else:
        assert counting.calls["list"] == 1
        assert log.startswith(
            "partial output of a killed worker\n"  # the boundary starts on a line of its own
            "forge: the worker running this step stopped before the step ended; delivery 2 runs it again"
            " from the start\nforge: test/svc/unit attempt 1 of 1 at "
        )
        assert log.endswith("$ echo fresh\nfresh\n")
        assert leftovers == []


async def test_a_follow_across_a_retried_attempt_shows_each_attempt_once_and_equals_the_final_log(
    repo: tuple[str, str], start_worker: StartWorker, bus: NatsBus, objects: MinioObjectStore
) -> None:
    """Attempt 1 fails, attempt 2 (dispatched after it, as Argo does) succeeds; a follower polls throughout.

    ``settled`` is what the API asks the store (the step's status is final); here it turns true once the
    last attempt's result is in, which is after its log was completed, as with the controller."""
    url, sha = repo
    script = 'echo "begin $FORGE_ATTEMPT"; sleep 0.5; echo "end $FORGE_ATTEMPT"; test "$FORGE_ATTEMPT" = 2'
    first = ci_job(url, sha, script, retries=1, attempt=0)
    second = ci_job(url, sha, script, retries=1, attempt=1, run_id=first.run_id)
    key = log_key(first.run_id, "test", "svc", "unit")
    final = asyncio.Event()

    async def settled() -> bool:
        return final.is_set()

    async def follow() -> bytes:
        seen = bytearray()
        async for chunk in LogReader(objects).follow(key, poll=0.05, idle_timeout=60, settled=settled):
            seen += chunk
        return bytes(seen)

    async with start_worker():
        follower = asyncio.ensure_future(follow())  # awaited below
        failed = await dispatch(bus, first, timeout=60)
        assert not failed.success
        assert not follower.done()  # the first attempt's complete log does not end the follow
        succeeded = await dispatch(bus, second, timeout=60)
        assert succeeded.success, succeeded.error
        final.set()
        followed = await asyncio.wait_for(follower, 30)
    stored = await objects.get(key)
    assert followed == stored
    text = followed.decode()
    for line in ("attempt 1 of 2", "attempt 2 of 2", "begin 1", "end 1", "begin 2", "end 2"):
        assert text.count(line) == 1, (line, text)
    assert text.index("end 1") < text.index("attempt 2 of 2") < text.index("begin 2")  # the boundary

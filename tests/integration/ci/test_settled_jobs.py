"""No job runs again once it completed (issue 11): on the real bus, with real NATS killed and restarted.

* A job delivered again after its result was stored (a NATS restart forgot the ack and the delivery
  count: the job comes back as a *first* delivery) is acked without running.
* A job whose handler settled its outcome and then failed before storing the result (its worker
  died there) is finished from the settled outcome on the next delivery: ``resume``, not a run.
* A result stored just before NATS is SIGKILLed is still there after the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS, Job, JobType, Result, result_subject
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.errors import ServiceUnavailableError
from forge.jobs.dispatch import dispatch, stored_result
from forge.ports import ObjectStore
from forge.testing.jobs import discovery_job
from forge.workflows.workers.runtime import Worker
from forge.workflows.workers.settling import settle, settles, stored_settled

from .conftest import StartWorker
from .support import FAST, ci_job, standard_repo


@dataclass
class Settling:
    """A resumable handler that settles its outcome, then dies (raises) before the result is stored, once."""

    runs: int = 0
    resumed: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, job: Job) -> dict[str, Any]:
        self.runs += 1
        assert settles()
        await settle({"answer": 42}, {"log": "checkpoint"})
        raise ServiceUnavailableError("the worker died here")  # not stored: JetStream delivers the job again

    async def resume(self, job: Job, state: dict[str, Any]) -> None:
        self.resumed.append(state)


@pytest.fixture
async def running(bus: NatsBus, objects: ObjectStore) -> AsyncIterator[tuple[Worker, Settling]]:
    handler = Settling()
    await bus.ensure_streams(STREAMS)
    worker = Worker(job_type=JobType.DISCOVERY, handler=handler, bus=bus, objects=objects, settings=FAST)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(worker.run(stop))
        yield worker, handler
        stop.set()


async def test_a_settled_job_is_finished_from_its_outcome_not_run_again(
    running: tuple[Worker, Settling], bus: NatsBus
) -> None:
    _, handler = running
    job = discovery_job("file:///nowhere", "a" * 40, branch=None)
    result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    assert result.data == {"answer": 42}  # the settled outcome is the result
    assert handler.runs == 1
    assert handler.resumed == [{"log": "checkpoint"}]
    settled = await stored_settled(bus, job.key)
    assert settled is not None
    assert settled.result == result


async def test_a_job_delivered_again_after_its_result_was_stored_is_not_run(
    tmp_path: Path, repo_and_sha: tuple[str, str], start_worker: StartWorker, bus: NatsBus
) -> None:
    """As a NATS restart that lost the consumer's ack does: the same job again, as a first delivery."""
    url, sha = repo_and_sha
    ran = tmp_path / "ran"
    job = ci_job(url, sha, f'echo run >> "{ran}"')
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
        assert result.success, result.error
        assert ran.read_text() == "run\n"
        await bus.publish(job.subject, job.model_dump_json().encode())  # no msg id: a new message
        async with asyncio.timeout(30):  # acked (a work queue drops it) without running
            while (bounds := await bus.stream_bounds("pipeline-tasks"))[0] <= bounds[1]:
                await asyncio.sleep(0.05)
    assert ran.read_text() == "run\n"
    assert await stored_result(bus, job.key) == result


async def test_a_result_stored_before_a_nats_sigkill_is_there_after_the_restart(
    tmp_path: Path, repo_and_sha: tuple[str, str], start_worker: StartWorker, bus: NatsBus, own_nats: ServiceProcess
) -> None:
    url, sha = repo_and_sha
    ran = tmp_path / "ran"
    job = ci_job(url, sha, f'echo run >> "{ran}"')
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
        assert result.success, result.error
        os.killpg(own_nats.pid, signal.SIGKILL)  # at once: the worker's ack may still be in flight
        port = int(own_nats.url.rsplit(":", 1)[1])
        restarted = start_nats(tmp_path / "nats", port)
        try:
            async with asyncio.timeout(30):  # the connection comes back by itself
                while True:
                    try:
                        kept = await stored_result(bus, job.key)
                        break
                    except ServiceUnavailableError:
                        await asyncio.sleep(0.1)
            assert kept == result
            await bus.publish(job.subject, job.model_dump_json().encode())  # a forgotten ack: delivered again
            async with asyncio.timeout(30):
                while (bounds := await bus.stream_bounds("pipeline-tasks"))[0] <= bounds[1]:
                    await asyncio.sleep(0.1)
        finally:
            restarted.stop()
    assert ran.read_text() == "run\n"


async def test_a_settled_record_is_not_a_result(bus: NatsBus) -> None:
    """A dispatcher waits for the result: the settled record (stored before the final event) is not one."""
    await bus.ensure_streams(STREAMS)
    job = discovery_job("file:///nowhere", "a" * 40, branch=None)
    await bus.publish(f"{result_subject(job.key)}.settled", b"{}")
    assert await stored_result(bus, job.key) is None
    stored = Result(job_id=job.id, key=job.key, success=True)
    await bus.publish(result_subject(job.key), stored.model_dump_json().encode())
    assert await stored_result(bus, job.key) is not None


@pytest.fixture
def repo_and_sha(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)

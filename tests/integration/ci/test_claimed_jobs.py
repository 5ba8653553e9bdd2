"""A job runs on one worker at a time (issue 11): the claim on ``pipeline.results.<key>.claim``, on real NATS.

* Two deliveries of one job at once, to two workers (as after a NATS SIGKILL that lost the consumer's
  delivery state): the step runs once; the second delivery waits on the first's live claim and ends
  acked with the first's result.
* A worker SIGKILLed while it holds a claim: the next worker takes the stale claim over once its
  lease ran out, and runs the job.
* A worker whose claim was taken over stores nothing and leaves the job to the new holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS, Job, JobType, Result, result_subject
from forge.embedded.process import ServiceProcess
from forge.errors import ConflictError
from forge.jobs.dispatch import RESULTS_STREAM, dispatch, stored_result
from forge.observability.worker import JOBS_FINISHED
from forge.ports import ObjectStore
from forge.ports.bus import StoredMessage
from forge.settings import ObjectStoreSettings, WorkerSettings
from forge.testing.jobs import discovery_job
from forge.workflows.workers.claims import Claim, claim_subject
from forge.workflows.workers.runtime import Worker
from forge.workflows.workers.settling import stored_settled

from .support import ci_job, read_pid, standard_repo, worker_env, worker_process

ONE_AT_A_TIME = WorkerSettings(concurrency=1, ack_wait=2.0, heartbeat=0.2, max_deliver=5, fetch_wait=0.2)


async def until(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.05)


class WatchedBus(NatsBus):
    """Counts the claims this connection read (a delivery that found one already there)."""

    claims_read = 0

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        if subject.endswith(".claim"):
            self.claims_read += 1
        return await super().last_message(stream, subject)


@dataclass
class Appending:
    """A handler that appends to a file each time it runs, then waits to be let go."""

    ran: Path
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, job: Job) -> dict[str, Any]:
        with self.ran.open("a") as out:
            out.write("run\n")
        await self.go.wait()
        return {"answer": 42}


Start = Callable[[Appending], Awaitable[tuple[Worker, WatchedBus]]]


@pytest.fixture
async def start(own_nats: ServiceProcess, objects: ObjectStore) -> AsyncIterator[Start]:
    """``await start(handler)``: a discovery worker on its own connection, running until the test ends."""
    stop = asyncio.Event()
    buses: list[WatchedBus] = []
    handlers: list[Appending] = []
    try:
        async with asyncio.TaskGroup() as group:

            async def started(handler: Appending) -> tuple[Worker, WatchedBus]:
                bus = await WatchedBus.connect(own_nats.url)
                buses.append(bus)
                handlers.append(handler)
                worker = Worker(
                    job_type=JobType.DISCOVERY, handler=handler, bus=bus, objects=objects, settings=ONE_AT_A_TIME
                )
                await worker.prepare()
                group.create_task(worker.run(stop))
                return worker, bus

            try:
                yield started
            finally:
                stop.set()
                for handler in handlers:
                    handler.go.set()
    finally:
        for bus in buses:
            await bus.close()


async def test_two_deliveries_of_one_job_at_once_run_it_once(
    tmp_path: Path, own_nats: ServiceProcess, bus: NatsBus, start: Start
) -> None:
    """As after a NATS SIGKILL that lost the consumer's delivery state: the job delivered again, at once."""
    await bus.ensure_streams(STREAMS)
    job = discovery_job("file:///nowhere", "b" * 40, branch=None)
    ran = tmp_path / "ran"
    handler = Appending(ran)
    first, _ = await start(handler)
    await bus.publish(job.subject, job.model_dump_json().encode(), msg_id="one")
    await until(lambda: _true(ran.exists()))  # the first worker runs it (one job at a time)
    await bus.publish(job.subject, job.model_dump_json().encode(), msg_id="two")  # a second delivery
    second, second_bus = await start(handler)
    await until(lambda: _true(second_bus.claims_read > 0))  # it found the first's claim (and waits)
    assert (await _claim(bus, job)).worker == first.worker_id != second.worker_id
    handler.go.set()
    await until(lambda: _empty(bus))  # both deliveries acked
    result = await stored_result(bus, job.key)
    assert result is not None
    assert result.data == {"answer": 42}
    assert ran.read_text() == "run\n"  # once
    assert await _stored_on(own_nats, result_subject(job.key)) == 1  # the second acked the first's result


async def test_a_worker_that_lost_its_claim_stops_the_job_and_stores_nothing(
    tmp_path: Path, own_nats: ServiceProcess, bus: NatsBus, start: Start
) -> None:
    """Its lease ran out (it was paused longer than a lease) and another worker took the claim over."""
    await bus.ensure_streams(STREAMS)
    job = discovery_job("file:///nowhere", "c" * 40, branch=None)
    ran = tmp_path / "ran"
    lost = JOBS_FINISHED.labels(JobType.DISCOVERY.value, "lost")
    before = lost._value.get()
    await start(Appending(ran))
    await bus.publish(job.subject, job.model_dump_json().encode())
    await until(lambda: _true(ran.exists()))
    taker = Claim(worker="someone-else", expires=4e9).model_dump_json().encode()

    async def taken_over() -> bool:  # as a worker that found the claim stale does (a renewal may come between)
        held = await bus.last_message(RESULTS_STREAM, claim_subject(job.key))
        assert held is not None
        try:
            await bus.publish_if_last(claim_subject(job.key), taker, last_sequence=held.sequence)
        except ConflictError:
            return False
        return True

    await until(taken_over)
    await until(lambda: _true(lost._value.get() > before))  # its next heartbeat stops the job
    assert await stored_result(bus, job.key) is None
    assert await stored_settled(bus, job.key) is None
    assert (await _claim(bus, job)).worker == "someone-else"
    assert not await _empty(bus)  # neither acked nor nak'ed: the new holder finishes it
    finished = Result(job_id=job.id, key=job.key, success=True, data={"by": "someone-else"})
    await bus.publish(result_subject(job.key), finished.model_dump_json().encode())  # ... as it does here
    await until(lambda: _empty(bus))  # the delivery that waited on the new holder's claim acks its result
    assert ran.read_text() == "run\n"


async def test_a_stopping_worker_does_not_wait_on_another_workers_claim(
    own_nats: ServiceProcess, bus: NatsBus, objects: ObjectStore, tmp_path: Path
) -> None:
    """A delivery waiting for a live claim's holder (a long step) does not hold its worker's stop up."""
    await bus.ensure_streams(STREAMS)
    job = discovery_job("file:///nowhere", "d" * 40, branch=None)
    held = Claim(worker="someone-else", expires=4e9).model_dump_json().encode()
    await bus.publish_if_last(claim_subject(job.key), held, last_sequence=0)
    own = await WatchedBus.connect(own_nats.url)
    handler = Appending(tmp_path / "ran")
    worker = Worker(job_type=JobType.DISCOVERY, handler=handler, bus=own, objects=objects, settings=ONE_AT_A_TIME)
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(worker.run(stop))
        await bus.publish(job.subject, job.model_dump_json().encode())
        await until(lambda: _true(own.claims_read > 0))  # it found the claim and waits
        stop.set()
        async with asyncio.timeout(60):
            await running
    finally:
        await own.close()
    assert not handler.ran.exists()
    assert not await _empty(bus)  # left for a later delivery


async def test_a_worker_sigkilled_while_holding_a_claim_is_taken_over_after_its_lease(
    tmp_path: Path,
    own_nats: ServiceProcess,
    bus: NatsBus,
    objects: ObjectStore,
    object_settings: ObjectStoreSettings,
) -> None:
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    out = tmp_path / "out"
    out.mkdir()
    ran = out / "ran"
    script = 'echo run >> "$RAN"; echo $$ > "$OUT/started.$$"; while [ ! -f "$GO" ]; do sleep 0.05; done'
    job = ci_job(str(src), sha, script, env={"OUT": str(out), "GO": str(out / "go"), "RAN": str(ran)})
    await bus.ensure_streams(STREAMS)
    env = worker_env(tmp_path, own_nats.url, object_settings)
    first = worker_process("worker-1", env, tmp_path / "logs")
    second: ServiceProcess | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            pending = tasks.create_task(dispatch(bus, job, timeout=120))
            await until(lambda: _true(ran.exists()))
            held = await _claim(bus, job)
            os.killpg(first.pid, signal.SIGKILL)  # holding the claim, mid-step
            for started in out.glob("started.*"):  # the step's processes die with their worker in production
                with contextlib.suppress(ProcessLookupError):  # the reaper may have killed it already
                    os.kill(read_pid(started), signal.SIGKILL)
            second = worker_process("worker-2", env, tmp_path / "logs")
            await until(lambda: _true(ran.read_text() == "run\nrun\n"))  # taken over: the step runs again
            taker = await _claim(bus, job)
            assert taker.worker != held.worker
            (out / "go").touch()
            result = await pending
        assert result.success, result.error
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def _true(value: bool) -> bool:
    return value


async def _claim(bus: NatsBus, job: Job) -> Claim:
    stored = await bus.last_message(RESULTS_STREAM, claim_subject(job.key))
    assert stored is not None
    return Claim.model_validate_json(stored.data)


async def _empty(bus: NatsBus) -> bool:
    first, last = await bus.stream_bounds("pipeline-discovery")
    return first > last


async def _stored_on(nats_server: ServiceProcess, subject: str) -> int:
    """How many messages ``pipeline-results`` holds on ``subject``."""
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info(RESULTS_STREAM, subjects_filter=subject)
    finally:
        await nc.close()
    return (info.state.subjects or {}).get(subject, 0)

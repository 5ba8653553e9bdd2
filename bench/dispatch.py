"""Dispatch overhead: no-op jobs through the whole job path vs raw NATS request/reply (DESIGN §6).

    .venv/bin/python bench/dispatch.py [--jobs 1000 --concurrency 1 32 --profile FILE --json]

Starts a ``nats-server`` with JetStream, PostgreSQL (a fresh, migrated database) and an S3 server
(the worker needs an object store). Then, for every concurrency level, ``--jobs`` CI jobs go the
real way: the controller's ``Dispatcher`` (look up a stored result, publish with a unique key and
the dispatcher's inbox) → JetStream → an in-process ``Worker`` whose handler publishes the step's outcome as a
``StepEvent`` (what the CI worker does for a short step) and returns ``{}`` → the stored result →
back to the dispatcher; meanwhile the controller's ``StepEventRecorder`` writes the events to
PostgreSQL in batches. Every job has its own step execution, and a series ends only when the
recorder has caught up; the benchmark then checks that every step is ``success`` in PostgreSQL.

The baseline, measured in the same run on the same server: raw nats-py request/reply (a core
subscription that responds with ``{}``; ``nc.request`` with the same concurrency). One more series
splits the cost: the same jobs with a handler that publishes no event. The dispatcher, the worker
and the recorder each have their own connections but share this process (one core for all the
Python). ``--json`` ends the output with one line of headline figures. Each series also reports this
process's CPU per job (``time.process_time``): on a shared machine it moves far less than the rate does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.step_events import StepEventRecorder
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.events import StepEvent
from forge.domain.messages import STREAMS, CiPayload, Job, JobType
from forge.domain.status import Status
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.embedded.s3 import start_s3
from forge.jobs.dispatch import Dispatcher
from forge.jobs.events import StepEventPublisher
from forge.ports.store import NewRepository, NewRun
from forge.settings import ObjectStoreSettings, WorkerSettings
from forge.testing.measure import machine
from forge.testing.postgres import create_database, start_postgres
from forge.workflows.workers.runtime import Worker

SHA = "b" * 40
ECHO_SUBJECT = "bench.echo"
WARMUP = 50
RAW = "raw nats request/reply"


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured series: how many jobs, how long in all, each one's latency."""

    jobs: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = 0.0  # this process's CPU (dispatcher, worker, recorder) during the series

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu_seconds * 1000 / self.jobs

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


_Series = tuple[str, "Sample"]


@dataclass(frozen=True, slots=True)
class _Urls:
    nats: str
    database: str
    objects: ObjectStoreSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per series")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="jobs in flight")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the dispatch series here")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-dispatch-") as tmp, _services(Path(tmp)) as urls:
        rows = asyncio.run(_bench(urls, args.jobs, args.concurrency, args.profile))
    print(f"machine: {machine()}")
    print(f"{args.jobs} jobs per series; dispatcher, worker and event recorder in this process")
    print(
        f"{'concurrency':>11}  {'series':<38} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU ms/job':>10}  {'jobs/s ÷ raw':>12} {'p50 ÷ raw':>9} {'p99 ÷ raw':>9}"
    )
    headline: dict[str, float] = {}
    for concurrency, series in rows:
        raw = series[0][1]
        for label, sample in series:
            ratios = ""
            if sample is not raw:
                ratios = (
                    f"  {sample.per_second / raw.per_second:12.3f} {sample.quantile(0.5) / raw.quantile(0.5):9.1f}"
                    f" {sample.quantile(0.99) / raw.quantile(0.99):9.1f}"
                )
            print(
                f"{concurrency:>11}  {label:<38} {sample.per_second:8.0f} {sample.quantile(0.5) * 1000:8.2f}"
                f" {sample.quantile(0.99) * 1000:8.2f} {sample.cpu_ms_per_job:10.3f}{ratios}"
            )
        ours = series[1][1]
        headline[f"jobs_per_s_c{concurrency}"] = round(ours.per_second, 1)
        headline[f"raw_jobs_per_s_c{concurrency}"] = round(raw.per_second, 1)
        headline[f"p50_ratio_c{concurrency}"] = round(ours.quantile(0.5) / raw.quantile(0.5), 2)
        headline[f"cpu_ms_per_job_c{concurrency}"] = round(ours.cpu_ms_per_job, 3)
        bare = series[2][1]
        headline[f"no_event_jobs_per_s_c{concurrency}"] = round(bare.per_second, 1)
        headline[f"no_event_cpu_ms_per_job_c{concurrency}"] = round(bare.cpu_ms_per_job, 3)
    if args.json:
        print(json.dumps(headline))


@contextlib.contextmanager
def _services(tmp: Path) -> Iterator[_Urls]:
    started: list[ServiceProcess] = []
    try:
        nats = start_nats(tmp / "nats")
        started.append(nats)
        postgres = start_postgres(tmp / "postgres")
        started.append(postgres)
        s3 = start_s3(tmp / "s3")
        started.append(s3)
        database = create_database(postgres.url, f"bench_{uuid.uuid4().hex[:12]}")
        objects = ObjectStoreSettings(
            endpoint=s3.url, access_key=s3.extra["access_key"], secret_key=s3.extra["secret_key"], bucket="bench"
        )
        yield _Urls(nats=nats.url, database=database, objects=objects)
    finally:
        for proc in reversed(started):
            proc.stop()


async def _bench(urls: _Urls, jobs: int, levels: list[int], profile: Path | None) -> list[tuple[int, list[_Series]]]:
    store = await PostgresStore.connect(urls.database, max_size=10)
    await store.migrate()
    rows: list[tuple[int, list[_Series]]] = []
    async with contextlib.AsyncExitStack() as stack:
        objects = await stack.enter_async_context(MinioObjectStore.from_settings(urls.objects))
        await objects.ensure_bucket()
        worker_bus = await stack.enter_async_context(_bus(urls.nats))
        dispatch_bus = await stack.enter_async_context(_bus(urls.nats))
        dispatcher = await stack.enter_async_context(Dispatcher(dispatch_bus))
        recorder_bus = await stack.enter_async_context(_bus(urls.nats))
        await stack.enter_async_context(_raw_responder(urls.nats))
        raw_client = await stack.enter_async_context(_raw_client(urls.nats))
        await dispatch_bus.ensure_streams(STREAMS)
        events = StepEventPublisher(worker_bus)
        recorder = StepEventRecorder(executions=store, bus=recorder_bus)
        publish_events = [True]

        async def handler(job: Job) -> dict[str, Any]:
            assert isinstance(job.payload, CiPayload)
            assert job.payload.step_execution_id is not None
            if publish_events[0]:
                event = StepEvent(
                    run_id=job.run_id, step_id=job.payload.step_execution_id, attempt=1, kind="success", exit_code=0
                )
                await events.publish(event)
            return {}

        settings = WorkerSettings(concurrency=max(levels), fetch_wait=1.0)
        worker = Worker(job_type=JobType.CI, handler=handler, bus=worker_bus, objects=objects, settings=settings)
        await worker.prepare()
        stop = asyncio.Event()
        profiler = cProfile.Profile() if profile is not None else None
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            group.create_task(recorder.run(stop))
            await _run(WARMUP, 4, _dispatcher(dispatcher, *await _steps(store, WARMUP), recorder=recorder))
            await _run(WARMUP, 4, _requester(raw_client))
            for concurrency in levels:
                raw = await _run(jobs, concurrency, _requester(raw_client))
                publish_events[0] = True
                run_id, steps = await _steps(store, jobs)
                if profiler is not None:
                    profiler.enable()
                ours = await _run(jobs, concurrency, _dispatcher(dispatcher, run_id, steps, recorder=recorder))
                if profiler is not None:
                    profiler.disable()
                await _all_recorded(store, run_id, jobs)
                publish_events[0] = False
                bare = await _run(jobs, concurrency, _dispatcher(dispatcher, *await _steps(store, jobs)))
                series = [
                    (RAW, raw),
                    ("dispatch → worker → event → PostgreSQL", ours),
                    ("dispatch → worker, no event", bare),
                ]
                rows.append((concurrency, series))
            stop.set()
    await store.close()
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return rows


async def _all_recorded(store: PostgresStore, run_id: uuid.UUID, jobs: int) -> None:
    """Durability check: every job's step is ``success`` in PostgreSQL."""
    executions = await store.get_executions(run_id)
    done = sum(1 for step in executions.steps if step.status is Status.SUCCESS)
    if done != jobs:
        raise SystemExit(f"only {done} of {jobs} step outcomes reached PostgreSQL")


async def _steps(store: PostgresStore, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A new run with ``count`` pending step executions: one per job of a series."""
    sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    await store.register_repository(NewRepository("bench/dispatch", "/nonexistent/bench.git"))
    run, _ = await store.create_run(NewRun(repository="bench/dispatch", commit_sha=sha))
    await store.claim_discovery(limit=1)
    names = [f"s{i:05d}" for i in range(count)]
    found = DiscoveryResult(
        commit=sha,
        base=None,
        projects=[
            DiscoveredProject(
                name="app",
                path="app",
                config_blob="0" * 40,
                phases={"test": names},
                steps=[
                    DiscoveredStep(phase="test", name=name, action="run", target="true", timeout_seconds=60)
                    for name in names
                ],
            )
        ],
        affected=[AffectedProject(project="app", reasons=["bench"])],
        phase_groups=[PhaseGroup(group=0, phases=["test"])],
    )
    await store.record_discovery(run.id, found, "bench/discovery.json")
    executions = await store.create_executions(run.id, found)
    return run.id, [executions.step_id("test", "app", name) for name in names]


async def _run(jobs: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Sample:
    """Call ``one(i)`` for ``i`` in ``range(jobs)`` with ``concurrency`` calls in flight."""
    latencies: list[float] = []
    numbers = iter(range(jobs))

    async def lane() -> None:
        for number in numbers:
            started = time.perf_counter()
            await one(number)
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())
    return Sample(
        jobs=jobs, seconds=time.perf_counter() - started, latencies=latencies, cpu_seconds=time.process_time() - cpu
    )


def _dispatcher(
    dispatcher: Dispatcher, run_id: uuid.UUID, steps: list[uuid.UUID], *, recorder: StepEventRecorder | None = None
) -> Callable[[int], Awaitable[None]]:
    """One job per step; with ``recorder``, the last job of the series waits until it caught up."""
    remaining = [len(steps)]

    async def one(number: int) -> None:
        payload = CiPayload(
            clone_url="/nonexistent/bench.git",
            phase="test",
            project="app",
            project_path="app",
            step=f"s{number:05d}",
            action="run",
            target="true",
            timeout_seconds=60,
            step_execution_id=steps[number],
        )
        job = Job(
            key=f"ci.{run_id}.{number}",
            type=JobType.CI,
            run_id=run_id,
            repository="bench/dispatch",
            commit_sha=SHA,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=60),
        )
        result = await dispatcher.dispatch(job, timeout=60)
        assert result.success, result.error
        remaining[0] -= 1
        if remaining[0] == 0 and recorder is not None:
            await recorder.caught_up()  # the series is done when PostgreSQL has every outcome

    return one


def _requester(nc: Client) -> Callable[[int], Awaitable[None]]:
    async def one(number: int) -> None:
        reply = await nc.request(ECHO_SUBJECT, str(number).encode(), timeout=10)
        assert reply.data == b"{}"

    return one


@contextlib.asynccontextmanager
async def _bus(url: str) -> AsyncIterator[NatsBus]:
    bus = await NatsBus.connect(url)
    try:
        yield bus
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def _raw_client(url: str) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(url, name="bench-raw-client")
    try:
        yield nc
    finally:
        await nc.drain()


@contextlib.asynccontextmanager
async def _raw_responder(url: str) -> AsyncIterator[None]:
    async with _raw_client(url) as nc:

        async def respond(msg: Msg) -> None:
            await msg.respond(b"{}")

        await nc.subscribe(ECHO_SUBJECT, cb=respond)
        await nc.flush()
        yield


if __name__ == "__main__":
    main()

"""Dispatch overhead: no-op jobs through the whole job path vs raw NATS request/reply (DESIGN §6).

    .venv/bin/python bench/dispatch.py [--jobs 2000 --concurrency 1 32 --api-process --profile FILE]

Starts a ``nats-server`` with JetStream, PostgreSQL (a fresh, migrated database), an S3 server
(the API and the worker need an object store) and the API (``create_app`` served by uvicorn in
this process on a free port; ``--api-process``: a ``forge-api`` process). Then, for every
concurrency level, ``--jobs`` CI jobs go the real way: ``dispatch()`` (subscribe, look up a stored
result, publish with a unique key) → JetStream → an in-process ``Worker`` whose handler makes one
status write (``PUT /v1/steps/{id}/status`` ``running`` over HTTP through ``HttpStatusReporter``
to a step created in the store) and returns ``{}`` → the stored result → back to the dispatcher.

The baseline, measured in the same run on the same server: raw nats-py request/reply (a core
subscription that responds with ``{}``; ``nc.request`` with the same concurrency). Two more series
split the cost: the same jobs with a handler that skips the status write, and the status write
alone. The dispatcher, the worker and the API each have their own connections but share this
process (one core for all the Python).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import platform
import pstats
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from nats.aio.client import Client
from nats.aio.msg import Msg

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.httpx_reporter import HttpStatusReporter
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.services import ApiServices
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.messages import STREAMS, CiPayload, Job, JobType
from forge.domain.status import Status
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess, binary, free_port, start_service
from forge.embedded.s3 import start_s3
from forge.jobs.dispatch import dispatch
from forge.ports.store import NewRepository, NewRun
from forge.settings import ObjectStoreSettings, WorkerSettings
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
    api: str | None  # a forge-api process; None: serve the app in this process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per series")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="jobs in flight")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the dispatch series here")
    parser.add_argument("--api-process", action="store_true", help="run the API as its own forge-api process")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="forge-bench-dispatch-") as tmp,
        _services(Path(tmp), api_process=args.api_process) as urls,
    ):
        rows = asyncio.run(_bench(urls, args.jobs, args.concurrency, args.profile))
    print(f"machine: {_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    where = "its own forge-api process" if args.api_process else "uvicorn in this process"
    print(f"{args.jobs} jobs per series; dispatcher and worker in this process, the API in {where}")
    print(
        f"{'concurrency':>11}  {'series':<31} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f"  {'jobs/s ÷ raw':>12} {'p50 ÷ raw':>9} {'p99 ÷ raw':>9}"
    )
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
                f"{concurrency:>11}  {label:<31} {sample.per_second:8.0f} {sample.quantile(0.5) * 1000:8.2f}"
                f" {sample.quantile(0.99) * 1000:8.2f}{ratios}"
            )


@contextlib.contextmanager
def _services(tmp: Path, *, api_process: bool) -> Iterator[_Urls]:
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
        api_url = None
        if api_process:
            port = free_port()
            api_url = f"http://127.0.0.1:{port}"
            env = {
                "FORGE_NATS__URL": nats.url,
                "FORGE_DATABASE__URL": database,
                "FORGE_OBJECTS__ENDPOINT": s3.url,
                "FORGE_OBJECTS__ACCESS_KEY": s3.extra["access_key"],
                "FORGE_OBJECTS__SECRET_KEY": s3.extra["secret_key"],
                "FORGE_OBJECTS__BUCKET": "bench",
                "FORGE_API__PORT": str(port),
                "FORGE_LOG_LEVEL": "WARNING",
            }
            ready = _http_ok(f"{api_url}/readyz")
            started.append(
                start_service("api", [binary("forge-api")], url=api_url, ready=ready, log=tmp / "api.log", env=env)
            )
        yield _Urls(nats=nats.url, database=database, objects=objects, api=api_url)
    finally:
        for proc in reversed(started):
            proc.stop()


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    return check


async def _bench(urls: _Urls, jobs: int, levels: list[int], profile: Path | None) -> list[tuple[int, list[_Series]]]:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    store = await PostgresStore.connect(urls.database, max_size=10)
    await store.migrate()
    steps = await _steps(store, 2 * max(levels))
    rows: list[tuple[int, list[_Series]]] = []
    async with contextlib.AsyncExitStack() as stack:
        objects = await stack.enter_async_context(MinioObjectStore.from_settings(urls.objects))
        await objects.ensure_bucket()
        api_url = urls.api
        if api_url is None:
            api_bus = await stack.enter_async_context(_bus(urls.nats))
            api_url = await stack.enter_async_context(
                _api(ApiServices(store=store, bus=api_bus, objects=objects, secrets=EnvSecretProvider()))
            )
        worker_bus = await stack.enter_async_context(_bus(urls.nats))
        dispatch_bus = await stack.enter_async_context(_bus(urls.nats))
        reporter = await stack.enter_async_context(HttpStatusReporter.from_url(api_url))
        await stack.enter_async_context(_raw_responder(urls.nats))
        raw_client = await stack.enter_async_context(_raw_client(urls.nats))
        await dispatch_bus.ensure_streams(STREAMS)
        logging.getLogger().setLevel(logging.WARNING)  # litestar's logging config turns INFO on at startup
        write_status = [True]

        async def handler(job: Job) -> dict[str, Any]:
            assert isinstance(job.payload, CiPayload)
            assert job.payload.step_execution_id is not None
            if write_status[0]:
                await reporter.step_status(job.payload.step_execution_id, Status.RUNNING, attempt=1)
            return {}

        settings = WorkerSettings(concurrency=max(levels), fetch_wait=1.0)
        worker = Worker(job_type=JobType.CI, handler=handler, bus=worker_bus, objects=objects, settings=settings)
        stop = asyncio.Event()
        profiler = cProfile.Profile() if profile is not None else None
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            tag = uuid.uuid4().hex[:8]
            await _run(WARMUP, 4, _dispatcher(dispatch_bus, steps, f"warm{tag}"))
            await _run(WARMUP, 4, _requester(raw_client))
            for concurrency in levels:
                raw = await _run(jobs, concurrency, _requester(raw_client))
                write_status[0] = True
                if profiler is not None:
                    profiler.enable()
                ours = await _run(jobs, concurrency, _dispatcher(dispatch_bus, steps, f"c{concurrency}{tag}"))
                if profiler is not None:
                    profiler.disable()
                write_status[0] = False
                bare = await _run(jobs, concurrency, _dispatcher(dispatch_bus, steps, f"b{concurrency}{tag}"))
                put = await _run(jobs, concurrency, _putter(reporter, steps))
                series = [
                    (RAW, raw),
                    ("dispatch → worker → PUT status", ours),
                    ("dispatch → worker, no PUT", bare),
                    ("PUT status alone", put),
                ]
                rows.append((concurrency, series))
            stop.set()
    await store.close()
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return rows


async def _steps(store: PostgresStore, count: int) -> list[uuid.UUID]:
    """``count`` step executions of one run (pending; the first write makes each ``running``)."""
    await store.register_repository(NewRepository("bench/dispatch", "/nonexistent/bench.git"))
    run, _ = await store.create_run(NewRun(repository="bench/dispatch", commit_sha=SHA))
    await store.claim_discovery(limit=1)
    names = [f"s{i:03d}" for i in range(count)]
    found = DiscoveryResult(
        commit=SHA,
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
    await store.record_discovery(run.id, found.model_dump(mode="json"), "bench/discovery.json")
    executions = await store.create_executions(run.id, found)
    return [executions.step_id("test", "app", name) for name in names]


async def _run(jobs: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Sample:
    """Call ``one(i)`` for ``i`` in ``range(jobs)`` with ``concurrency`` calls in flight."""
    latencies: list[float] = []
    numbers = iter(range(jobs))

    async def lane() -> None:
        for number in numbers:
            started = time.perf_counter()
            await one(number)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())
    return Sample(jobs=jobs, seconds=time.perf_counter() - started, latencies=latencies)


def _dispatcher(bus: NatsBus, steps: list[uuid.UUID], series: str) -> Callable[[int], Awaitable[None]]:
    run_id = uuid.uuid4()

    async def one(number: int) -> None:
        payload = CiPayload(
            clone_url="/nonexistent/bench.git",
            phase="test",
            project="app",
            project_path="app",
            step=f"s{number % len(steps):03d}",
            action="run",
            target="true",
            timeout_seconds=60,
            step_execution_id=steps[number % len(steps)],
        )
        job = Job(
            key=f"ci.{series}.{number}",
            type=JobType.CI,
            run_id=run_id,
            repository="bench/dispatch",
            commit_sha=SHA,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=60),
        )
        result = await dispatch(bus, job, timeout=60)
        assert result.success, result.error

    return one


def _putter(reporter: HttpStatusReporter, steps: list[uuid.UUID]) -> Callable[[int], Awaitable[None]]:
    async def one(number: int) -> None:
        await reporter.step_status(steps[number % len(steps)], Status.RUNNING, attempt=1)

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


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the benchmark owns Ctrl-C)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def _api(services: ApiServices) -> AsyncIterator[str]:
    port = free_port()
    server = _Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning"))
    url = f"http://127.0.0.1:{port}"
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve())
        async with httpx.AsyncClient(base_url=url) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        try:
            yield url
        finally:
            server.should_exit = True


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()

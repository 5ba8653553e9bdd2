"""API reads: forge-api against a bare Litestar app returning the same bytes (issue 12).

    .venv/bin/python bench/api.py [--seconds 10 --concurrency 1 32 --projects 100 --json]

Starts PostgreSQL (a fresh, migrated database), NATS and an S3 server (forge-api connects to all
three), and writes one finished run through the store ports: ``--projects`` projects of one step
each, discovered, planned, every step started (with a log key) and succeeded, the run ended as
``success`` — the run ``forge run`` shows when it is done.

Two servers, each uvicorn in its own process with the same settings (asyncio loop, h11, no access
log), pinned to CPU 0 when the machine has more than one (the embedded PostgreSQL and the load
generator, at nice 10, share CPU 1, so the database never takes CPU from the server under test nor
waits behind the generator):

- **forge**: ``forge-api`` itself, configured by ``FORGE_*`` variables as ``forge platform up``
  starts it;
- **bare**: a Litestar app (this file with ``--serve-bare``) with the same two routes returning,
  from memory, the bytes forge-api answered for them — the floor of uvicorn + Litestar.

Then, for ``GET /v1/runs/{id}`` and ``GET /v1/runs/{id}/executions`` at every ``--concurrency``:
a keep-alive HTTP/1.1 load generator in this process (raw asyncio sockets, one connection per
request in flight, pinned to CPU 1) sends requests for ``--seconds`` to each server (after one
second of warm-up each), in five slices alternating between forge and bare so that both see the
same background load on a shared machine, and records every latency. Each series also reports the
CPU the server and the generator used (``/proc``) and the server's CPU per request, the figure
least moved by other load: the bare app's server at ~100% while the generator stays below its core
shows the generator is not the bottleneck. ``--json`` ends the output with one JSON line of headline
figures: the forge ÷ bare throughput ratios and forge's p99 at the highest concurrency (with the
bare app's p99 there: the floor the machine allowed during the run, and forge's CPU per request ÷
the bare app's), and the watcher figures of
``bench/watch.py`` (run after the reads, as its own process, unless ``--no-watch``: 100 SSE
watchers of a running pipeline against one poller).

``--in-process`` measures instead what the servers' sockets and the machine's other load blur: the
same run, forge-api's app (built by its own composition root, on the same services) and the bare
app driven over ASGI in this process without sockets, ``--concurrency`` requests in flight, in
alternating rounds; the figure is the process CPU per request (µs, median of the rounds; PostgreSQL's
own CPU is not counted), ending with one JSON line of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from litestar import Litestar, Response, get

from forge.adapters.postgres_store import PostgresStore
from forge.api.__main__ import build
from forge.api.app import create_app
from forge.api.auth.limits import RateLimits
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.embedded.process import binary, free_port, http_ready, start_service
from forge.ports.store import NewRepository, NewRun
from forge.settings import Settings
from forge.testing.measure import api_services, cpu_seconds, machine, pin

SHA = "e" * 40
WARMUP = 1.0
#: Each series is measured in this many slices, forge and bare alternating (forge first, then bare first),
#: so both servers see the same background load on a shared machine.
SLICES = 5
SLICE_WARMUP = 0.2
ENDPOINTS = {"run": "/v1/runs/{id}", "executions": "/v1/runs/{id}/executions"}


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured series: requests answered in ``seconds``, each one's latency, CPU seconds used."""

    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    client_cpu: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float:
        return self.server_cpu / max(self.requests, 1)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured series")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="requests in flight")
    parser.add_argument("--projects", type=int, default=100, help="projects (one step each) of the run")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    parser.add_argument("--no-watch", action="store_true", help="skip the watchers (bench/watch.py)")
    parser.add_argument("--in-process", action="store_true", help="CPU per request of the apps over ASGI, no sockets")
    parser.add_argument("--rounds", type=int, default=5, help="--in-process: alternating rounds per endpoint")
    parser.add_argument("--requests", type=int, default=4000, help="--in-process: requests per round")
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        _serve_bare(int(args.serve_bare[0]), Path(args.serve_bare[1]))
        return
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="forge-bench-api-") as tmp:
            print(json.dumps(_in_process(Path(tmp), args.projects, max(args.concurrency), args.requests, args.rounds)))
        return
    with tempfile.TemporaryDirectory(prefix="forge-bench-api-") as tmp:
        results, sizes = _bench(Path(tmp), args.projects, args.seconds, args.concurrency)
    print(f"machine: {machine()}")
    print(f"a finished run of {args.projects} projects x 1 step; {args.seconds:g} s per series, keep-alive")
    print(
        f"{'endpoint':<28} {'in flight':>9} {'server':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'srv CPU':>7} {'gen CPU':>7} {'µs CPU/req':>10} {'forge ÷ bare':>12}"
    )
    headline: dict[str, float] = {}
    top = max(args.concurrency)
    for (name, concurrency), (forge, bare) in results.items():
        label = f"{ENDPOINTS[name]} ({sizes[name] / 1000:.0f} KB)"
        for server, sample in (("forge", forge), ("bare", bare)):
            ratio = f"{forge.per_second / bare.per_second:12.3f}" if server == "forge" else ""
            print(
                f"{label:<28} {concurrency:>9} {server:<6} {sample.per_second:8.0f} {sample.quantile(0.5) * 1000:8.2f}"
                f" {sample.quantile(0.99) * 1000:8.2f} {sample.server_cpu / sample.seconds:7.0%}"
                f" {sample.client_cpu / sample.seconds:7.0%} {sample.cpu_per_request * 1e6:10.0f} {ratio}"
            )
        if concurrency == top:
            headline[f"{name}_ratio_c{top}"] = round(forge.per_second / bare.per_second, 3)
            headline[f"{name}_p99_ms_c{top}"] = round(forge.quantile(0.99) * 1000, 2)
            headline[f"{name}_bare_p99_ms_c{top}"] = round(bare.quantile(0.99) * 1000, 2)
            headline[f"{name}_cpu_ratio_c{top}"] = round(forge.cpu_per_request / bare.cpu_per_request, 3)
    order = [f"run_ratio_c{top}", f"executions_ratio_c{top}", f"run_p99_ms_c{top}", f"executions_p99_ms_c{top}"]
    order += [f"run_bare_p99_ms_c{top}", f"executions_bare_p99_ms_c{top}"]  # the same machine's floor
    order += [f"run_cpu_ratio_c{top}", f"executions_cpu_ratio_c{top}"]  # forge's CPU per request ÷ bare's
    figures: dict[str, float] = {key: headline[key] for key in order}
    if not args.no_watch:
        figures |= _watchers()
    if args.json:
        print(json.dumps(figures))


def _watchers() -> dict[str, float]:
    """Run ``bench/watch.py --json`` (its output goes through) and take its headline figures."""
    watch = Path(__file__).with_name("watch.py")
    done = subprocess.run([sys.executable, str(watch), "--json"], capture_output=True, text=True, check=True)
    sys.stdout.write(done.stdout)
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return {"watchers": last["watchers"], "watch_cpu_ms_per_event": last["watch_cpu_ms_per_event"]}


def _bench(
    tmp: Path, projects: int, seconds: float, levels: list[int]
) -> tuple[dict[tuple[str, int], tuple[Sample, Sample]], dict[str, int]]:
    with api_services(tmp, postgres_cpu=1) as env:  # its backends share CPU 1 with the generator
        run_id = asyncio.run(_finished_run(env["FORGE_DATABASE__URL"], projects))
        paths = {name: path.format(id=run_id) for name, path in ENDPOINTS.items()}
        auth = {"Authorization": f"Bearer {env['FORGE_TOKEN']}"}  # both servers get it: forge verifies it
        api_port, bare_port = free_port(), free_port()
        api = start_service(
            "forge-api",
            [binary("forge-api")],
            url=f"http://127.0.0.1:{api_port}",
            ready=http_ready(f"http://127.0.0.1:{api_port}/readyz"),
            log=tmp / "api.log",
            env={**env, "FORGE_API__PORT": str(api_port), "FORGE_API__PUBLIC_URL": f"http://127.0.0.1:{api_port}"},
        )
        try:
            bodies = tmp / "bodies"
            bodies.mkdir()
            for name, path in paths.items():
                request = urllib.request.Request(f"{api.url}{path}", headers=auth)
                with urllib.request.urlopen(request, timeout=10) as resp:
                    (bodies / f"{name}.json").write_bytes(resp.read())
                (bodies / f"{name}.path").write_text(path)
            bare = start_service(
                "bare",
                [sys.executable, __file__, "--serve-bare", str(bare_port), str(bodies)],
                url=f"http://127.0.0.1:{bare_port}",
                ready=http_ready(f"http://127.0.0.1:{bare_port}{paths['run']}"),
                log=tmp / "bare.log",
            )
            try:
                pin(api.pid, 0)
                pin(bare.pid, 0)
                pin(0, 1)
                os.nice(10)  # on CPU 1 PostgreSQL comes first: the generator only adds load
                results: dict[tuple[str, int], tuple[Sample, Sample]] = {}
                for name, path in paths.items():
                    for concurrency in levels:
                        results[name, concurrency] = _series(
                            path, concurrency, seconds, (api_port, api.pid), (bare_port, bare.pid), auth
                        )
            finally:
                bare.stop()
        finally:
            api.stop()
        sizes = {name: (bodies / f"{name}.json").stat().st_size for name in paths}
    return results, sizes


async def _finished_run(dsn: str, projects: int) -> uuid.UUID:
    """A run of ``projects`` projects x 1 step, every step started and succeeded, the run a success."""
    store = await PostgresStore.connect(dsn)
    try:
        await store.migrate()
        await store.register_repository(NewRepository("bench/mono", "https://git.example/bench/mono.git"))
        run, _ = await store.create_run(NewRun(repository="bench/mono", commit_sha=SHA, branch="main"))
        await store.claim_discovery(limit=1)
        names = [f"services/team{i % 10:02d}/p{i:04d}" for i in range(projects)]
        found = DiscoveryResult(
            commit=SHA,
            base="d" * 40,
            branch="main",
            repository="bench/mono",
            projects=[
                DiscoveredProject(
                    name=name,
                    path=name,
                    config_blob=f"{i:040x}",
                    depends_on=[names[i - 1]] if i else [],
                    phases={"test": ["unit"]},
                    steps=[
                        DiscoveredStep(
                            phase="test",
                            name="unit",
                            action="run",
                            target="make test",
                            env={"GOFLAGS": "-count=1"},
                            timeout_seconds=600,
                        )
                    ],
                )
                for i, name in enumerate(names)
            ],
            affected=[AffectedProject(project=name, reasons=["changed: go.mod"]) for name in names],
            phase_groups=[PhaseGroup(group=0, phases=["test"])],
            changed_files=projects,
        )
        await store.record_discovery(run.id, found, f"discovery/{run.id}.json")
        ex = await store.create_executions(run.id, found)
        events = [
            StepEvent(run_id=run.id, step_id=s.id, attempt=1, kind="started", logs_key=f"logs/{run.id}/{s.id}.log")
            for s in ex.steps
        ] + [StepEvent(run_id=run.id, step_id=s.id, attempt=1, kind="success", exit_code=0) for s in ex.steps]
        await store.apply_step_events(events)
        await store.finish_run(run.id, Status.SUCCESS)
        return run.id
    finally:
        await store.close()


def _series(
    path: str,
    concurrency: int,
    seconds: float,
    forge: tuple[int, int],
    bare: tuple[int, int],
    headers: dict[str, str],
) -> tuple[Sample, Sample]:
    """Forge and bare (each a (port, pid)) for ``seconds`` each, in ``SLICES`` alternating slices after a
    warm-up of each."""
    samples: dict[tuple[int, int], list[Sample]] = {forge: [], bare: []}
    for server in (forge, bare):
        asyncio.run(_load(server[0], path, concurrency, 0.0, server[1], headers))  # warm-up only
    for n in range(SLICES):
        for server in (forge, bare) if n % 2 == 0 else (bare, forge):
            sample = _load(server[0], path, concurrency, seconds / SLICES, server[1], headers, warmup=SLICE_WARMUP)
            samples[server].append(asyncio.run(sample))
    return _merged(samples[forge]), _merged(samples[bare])


def _merged(slices: list[Sample]) -> Sample:
    return Sample(
        sum(s.requests for s in slices),
        sum(s.seconds for s in slices),
        [latency for s in slices for latency in s.latencies],
        sum(s.server_cpu for s in slices),
        sum(s.client_cpu for s in slices),
    )


async def _load(
    port: int,
    path: str,
    concurrency: int,
    seconds: float,
    server_pid: int,
    headers: dict[str, str],
    *,
    warmup: float = WARMUP,
) -> Sample:
    """``concurrency`` keep-alive connections, each sending ``GET path`` as soon as the last answer came."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n{extra}\r\n".encode()
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(lambda: _Connection(request), "127.0.0.1", port))[1] for _ in range(concurrency)
    ]
    latencies: list[float] = []
    recording = False
    stop_at = time.perf_counter() + warmup + seconds

    async def lane(conn: _Connection) -> None:
        while (now := time.perf_counter()) < stop_at:
            await conn.get()
            if recording:
                latencies.append(time.perf_counter() - now)

    try:
        async with asyncio.TaskGroup() as group:
            for conn in connections:
                group.create_task(lane(conn))
            await asyncio.sleep(warmup)
            recording = True
            started, server0, client0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - started
            server_cpu, client_cpu = cpu_seconds(server_pid) - server0, time.process_time() - client0
    finally:
        for conn in connections:
            conn.close()
    return Sample(len(latencies), elapsed, latencies, server_cpu, client_cpu)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, responses framed by Content-Length."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    async def get(self) -> None:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(self._request)
        await self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._need < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[: end + 2]).lower()
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"unexpected response: {bytes(self._buffer[:200])!r}")
            start = head.index(b"content-length:") + 15
            self._need = end + 4 + int(head[start : head.index(b"\r\n", start)])
        if len(self._buffer) >= self._need:
            del self._buffer[: self._need]
            self._need = -1
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("server closed the connection"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _in_process(tmp: Path, projects: int, concurrency: int, requests: int, rounds: int) -> dict[str, float]:
    """µs of this process's CPU per request, forge-api's app against the bare app, over ASGI without sockets."""

    async def measure(env: dict[str, str], run_id: uuid.UUID) -> dict[str, float]:
        os.environ.update(env)  # Settings() as forge-api reads it
        settings = Settings()
        async with build(settings) as services:
            app = create_app(services, rate_limits=RateLimits.from_settings(settings.api, services.rate_limiter))
            headers = [(b"authorization", f"Bearer {env['FORGE_TOKEN']}".encode()), (b"accept", b"application/json")]
            figures: dict[str, float] = {}
            print(
                f"machine: {machine()}\n{concurrency} in flight, {rounds} rounds of {requests} requests, µs CPU/request"
            )
            for name, template in ENDPOINTS.items():
                path = template.format(id=run_id)
                body = await _asgi_body(app, path, headers)

                def answer(body: bytes = body) -> Response[bytes]:
                    return Response(body, media_type="application/json")

                bare = Litestar(route_handlers=[get(path, sync_to_thread=False)(answer)])
                gc.collect()
                gc.freeze()  # as forge-api does after start-up
                forge_us, bare_us = [], []
                for _ in range(rounds):
                    forge_us.append(await _asgi_cpu(app, path, headers, concurrency, requests))
                    bare_us.append(await _asgi_cpu(bare, path, headers, concurrency, requests))
                f, b = statistics.median(forge_us), statistics.median(bare_us)
                print(
                    f"{template:<28} forge {f:6.1f} ({min(forge_us):.1f}-{max(forge_us):.1f})"
                    f"  bare {b:6.1f} ({min(bare_us):.1f}-{max(bare_us):.1f})  forge - bare {f - b:6.1f}"
                )
                figures |= {f"{name}_inproc_us": round(f, 1), f"{name}_bare_inproc_us": round(b, 1)}
            return figures

    with api_services(tmp) as env:
        run_id = asyncio.run(_finished_run(env["FORGE_DATABASE__URL"], projects))
        return asyncio.run(measure(env, run_id))


def _asgi_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def _asgi_receive() -> dict[str, object]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _asgi_body(app: object, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(_asgi_scope(path, headers), _asgi_receive, send)  # type: ignore[operator]
    if sent[0]["status"] != 200:
        raise RuntimeError(f"GET {path}: {sent[0]['status']}")
    return b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]


async def _asgi_cpu(app: object, path: str, headers: list[tuple[bytes, bytes]], concurrency: int, n: int) -> float:
    """µs of process CPU per request for ``n`` requests, ``concurrency`` at a time (a 200 each)."""
    left = n

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"GET {path}: {message['status']}")

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await app(_asgi_scope(path, headers), _asgi_receive, send)  # type: ignore[operator]

    started = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())
    return (time.process_time() - started) / n * 1e6


def _serve_bare(port: int, bodies: Path) -> None:
    """The floor: Litestar + uvicorn (as forge-api runs them) answering with bytes kept in memory."""
    handlers = []
    for name in ENDPOINTS:
        body = (bodies / f"{name}.json").read_bytes()

        def answer(body: bytes = body) -> Response[bytes]:
            return Response(body, media_type="application/json")

        handlers.append(get((bodies / f"{name}.path").read_text(), name=name, sync_to_thread=False)(answer))
    uvicorn.run(Litestar(route_handlers=handlers), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

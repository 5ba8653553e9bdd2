"""Watching runs: 100 SSE watchers of ``GET /v1/runs/{id}/events`` against one poller doing what ``forge run``
did before it (issue 12).

    .venv/bin/python bench/watch.py [--watchers 100 --steps 100 --seconds 10 --json]

Starts PostgreSQL (a fresh, migrated database), NATS and an S3 server, and ``forge-api`` itself (as
``forge platform up`` starts it, pinned to CPU 0 when there are two). Each series writes one running
run of ``--steps`` projects x 1 step the way the controller does: one ``apply_step_events``
transaction per step event, every step ``started`` then ``success`` at a steady rate over
``--seconds``, then ``finish_run``. The API's CPU time (``/proc/<pid>/stat``) is measured over the
writes of each series:

- **idle**: nobody watches (what the API spends on the LISTEN notices alone);
- **watchers**: ``--watchers`` clients (httpx, in this process, pinned to CPU 1) follow the run's event
  stream from before the first write until its ``end`` event; every client checks it got every
  change once, in order;
- **poller**: one client does what ``forge run`` did: ``GET /v1/runs/{id}`` every 0.1 s and
  ``GET /v1/runs/{id}/executions`` every 0.25 s.

``--json`` ends the output with one JSON line: ``watch_cpu_ms_per_event`` (API CPU per change event
delivered to one watcher), ``watchers_cpu_ms_per_s`` and ``poller_cpu_ms_per_s`` (API CPU per second
of each series, idle included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from forge.adapters.postgres_store import PostgresStore
from forge.cli.sse import EventParser
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.embedded.process import binary, free_port, http_ready, start_service
from forge.ports.store import NewRepository, NewRun, RunExecutions
from forge.testing.measure import api_services, cpu_seconds, machine, pin


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    seconds: float
    api_cpu: float
    events: int = 0
    requests: int = 0

    @property
    def cpu_ms_per_s(self) -> float:
        return self.api_cpu * 1000 / self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100, help="projects (one step each) of each run")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the writes of a series take")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-watch-") as tmp:
        series, connect = asyncio.run(_bench(Path(tmp), args.watchers, args.steps, args.seconds))
    _, watchers, poller = series
    print(f"machine: {machine()}")
    print(
        f"a running run of {args.steps} projects x 1 step; {2 * args.steps} step events (one transaction each)"
        f" over {args.seconds:g} s, then finish_run"
    )
    print(f"{'series':<34} {'seconds':>7} {'API CPU ms':>10} {'ms/s':>7} {'events':>8} {'requests':>8} {'ms/unit':>8}")
    for s in series:
        unit = s.events or s.requests
        per = f"{s.api_cpu * 1000 / unit:8.3f}" if unit else ""
        label = {"idle": "idle (LISTEN only)", "watchers": f"{args.watchers} SSE watchers", "poller": "1 poller"}
        print(
            f"{label[s.name]:<34} {s.seconds:7.2f} {s.api_cpu * 1000:10.0f} {s.cpu_ms_per_s:7.1f}"
            f" {s.events:8} {s.requests:8} {per}"
        )
    print(
        f"connecting {args.watchers} watchers (a snapshot each): {connect * 1000 / args.watchers:.2f} ms API CPU each"
    )
    ratio = watchers.cpu_ms_per_s / poller.cpu_ms_per_s
    print(f"{args.watchers} watchers cost {ratio:.2f}x the API CPU of one poller")
    if args.json:
        print(
            json.dumps(
                {
                    "watchers": args.watchers,
                    "watch_cpu_ms_per_event": round(watchers.api_cpu * 1000 / watchers.events, 4),
                    "poller_cpu_ms_per_s": round(poller.cpu_ms_per_s, 1),
                    "watchers_cpu_ms_per_s": round(watchers.cpu_ms_per_s, 1),
                }
            )
        )


async def _bench(tmp: Path, watchers: int, steps: int, seconds: float) -> tuple[list[Series], float]:
    with api_services(tmp) as env:
        dsn = env["FORGE_DATABASE__URL"]
        store = await PostgresStore.connect(dsn)
        await store.migrate()
        await store.register_repository(NewRepository("bench/mono", "https://git.example/bench/mono.git"))
        port = free_port()
        api = start_service(
            "forge-api",
            [binary("forge-api")],
            url=f"http://127.0.0.1:{port}",
            ready=http_ready(f"http://127.0.0.1:{port}/readyz"),
            log=tmp / "api.log",
            env={**env, "FORGE_API__PORT": str(port), "FORGE_API__PUBLIC_URL": f"http://127.0.0.1:{port}"},
        )
        try:
            pin(api.pid, 0)
            pin(0, 1)
            limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
            headers = {"Authorization": f"Bearer {env['FORGE_TOKEN']}"}
            async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=60, headers=headers) as client:
                await client.get("/readyz")
                idle = await _series("idle", store, steps, seconds, api.pid, client)
                watched, connect = await _watched(store, steps, seconds, api.pid, client, watchers)
                polled = await _series("poller", store, steps, seconds, api.pid, client, poll=True)
        finally:
            api.stop()
            await store.close()
    return [idle, watched, polled], connect


async def _run(store: PostgresStore, steps: int) -> RunExecutions:
    """A running run of ``steps`` projects x 1 step, planned, with its workflow recorded."""
    sha = uuid.uuid4().hex + "0" * 8
    run, _ = await store.create_run(NewRun(repository="bench/mono", commit_sha=sha, branch="main"))
    await store.claim_discovery(limit=10)
    names = [f"services/team{i % 10:02d}/p{i:04d}" for i in range(steps)]
    found = DiscoveryResult(
        commit=sha,
        base=None,
        projects=[
            DiscoveredProject(
                name=name,
                path=name,
                config_blob=f"{i:040x}",
                phases={"test": ["unit"]},
                steps=[
                    DiscoveredStep(phase="test", name="unit", action="run", target="make test", timeout_seconds=600)
                ],
            )
            for i, name in enumerate(names)
        ],
        affected=[AffectedProject(project=name, reasons=["changed"]) for name in names],
        phase_groups=[PhaseGroup(group=0, phases=["test"])],
    )
    await store.record_discovery(run.id, found, f"discovery/{run.id}.json")
    ex = await store.create_executions(run.id, found)
    await store.set_workflow(run.id, f"wf-{run.id}")
    return ex


async def _write(store: PostgresStore, ex: RunExecutions, seconds: float) -> None:
    """Every step started then succeeded, one transaction per event at a steady rate; then the run's end."""
    events = [StepEvent(run_id=ex.run_id, step_id=s.id, attempt=1, kind="started") for s in ex.steps]
    events += [StepEvent(run_id=ex.run_id, step_id=s.id, attempt=1, kind="success", exit_code=0) for s in ex.steps]
    interval = seconds / len(events)
    start = time.monotonic()
    for i, event in enumerate(events):
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        await store.apply_step_events([event])
    await store.finish_run(ex.run_id, Status.SUCCESS)


async def _series(
    name: str,
    store: PostgresStore,
    steps: int,
    seconds: float,
    pid: int,
    client: httpx.AsyncClient,
    *,
    poll: bool = False,
) -> Series:
    ex = await _run(store, steps)
    requests = [0]
    stop = asyncio.Event()

    async def every(path: str, period: float) -> None:
        while not stop.is_set():
            (await client.get(path)).raise_for_status()
            requests[0] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await stop.wait()

    pollers = (
        [
            asyncio.create_task(every(f"/v1/runs/{ex.run_id}", 0.1)),
            asyncio.create_task(every(f"/v1/runs/{ex.run_id}/executions", 0.25)),
        ]
        if poll
        else []
    )
    cpu, start = cpu_seconds(pid), time.monotonic()
    await _write(store, ex, seconds)
    stop.set()
    await asyncio.gather(*pollers)
    return Series(name, time.monotonic() - start, cpu_seconds(pid) - cpu, requests=requests[0])


async def _watched(
    store: PostgresStore, steps: int, seconds: float, pid: int, client: httpx.AsyncClient, watchers: int
) -> tuple[Series, float]:
    ex = await _run(store, steps)
    connected = [asyncio.Event() for _ in range(watchers)]
    received: list[list[int]] = [[] for _ in range(watchers)]

    async def watcher(i: int) -> None:
        parser = EventParser()
        async with client.stream("GET", f"/v1/runs/{ex.run_id}/events") as response:
            response.raise_for_status()
            async for text in response.aiter_text():
                for event in parser.feed(text):
                    if event.event == "snapshot":
                        connected[i].set()
                    elif event.event == "change":
                        received[i].append(int(event.id or 0))
                    elif event.event == "end":
                        return

    cpu = cpu_seconds(pid)
    tasks = [asyncio.create_task(watcher(i)) for i in range(watchers)]
    for event in connected:
        await event.wait()
    connect_cpu = cpu_seconds(pid) - cpu
    cpu, start = cpu_seconds(pid), time.monotonic()
    await _write(store, ex, seconds)
    await asyncio.gather(*tasks)
    elapsed, used = time.monotonic() - start, cpu_seconds(pid) - cpu
    expected = [c.id for c in await store.changes_since(ex.run_id, 0, limit=1000)]
    for ids in received:  # every change once, in order, none before the snapshot's
        if ids != expected[len(expected) - len(ids) :] or len(ids) < 4 * steps:
            sys.exit(f"a watcher got {len(ids)} changes out of order or missing some")
    events = sum(len(ids) for ids in received)
    return Series("watchers", elapsed, used, events=events), connect_cpu


if __name__ == "__main__":
    main()

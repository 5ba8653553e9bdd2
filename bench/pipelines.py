"""Concurrent pipelines on the embedded platform vs the process-spawn floor (DESIGN §9).

    .venv/bin/python bench/pipelines.py [--runs 100 --projects 10 --concurrency 8 --ci-workers 1 --json]

Generates a git repository whose ``--projects`` projects each have the phases check, build and
test with one ``true`` step, starts the whole embedded platform with ``platform_up`` (NATS,
PostgreSQL, S3, forge-api, forge-controller with the local engine, forge-worker discovery and ci)
in a temporary home, registers the repository and creates ``--runs`` runs at once through the
REST API, one per commit (each commit changes one file; ``base_sha`` is None so every project is
affected: runs x projects x 3 steps). It waits until every run is final and reports the success
rate, the wall time (first POST to the last run's ``completed_at``), steps per second and the
p50/p99 run durations (``completed_at - created_at``).

Concurrency: ``FORGE_WORKER__CONCURRENCY`` (jobs per worker process) and
``FORGE_ENGINE__MAX_PARALLEL`` (steps the local engine runs at once) are both ``--concurrency``;
``--ci-workers`` > 1 starts more ``forge-worker ci`` processes, each with that concurrency.

The floor, measured in the same run: the same number of ``sh -c true`` processes spawned by
asyncio with ``--concurrency`` of them at once. ``--json`` ends the output with one line of headline
figures (runs, runs_ok, steps_ok, wall_s, floor_s, ratio, cpu_ms_per_step, ci_worker_cpu_ms_per_step,
kernel_threads_cpu_ms_per_step). CPU per step counts the platform's processes and their children;
the kernel threads' CPU (kthreadd's children: work such as a sandbox's namespace teardown, but also any
other load of the machine) is reported beside it, not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from forge.adapters.oidc_client import BearerAuth
from forge.cli.api_client import token_source
from forge.cli.platform import Platform, platform_down, platform_up
from forge.embedded.process import ServiceProcess, binary, start_service
from forge.testing.gitrepos import commit_files
from forge.testing.measure import machine

FINAL = {"success", "failed", "cancelled"}
KERNEL = "kernel threads"
KTHREADD = 2  # the kernel threads' parent: their CPU (namespace teardown, RCU, ...) is nobody's process's
PHASES = ("check", "build", "test")
REPOSITORY = "bench/pipelines"


@dataclass(frozen=True, slots=True)
class Outcome:
    runs: list[dict[str, Any]]
    wall: float
    steps: int
    steps_ok: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8, help="worker concurrency and engine max_parallel")
    parser.add_argument("--ci-workers", type=int, default=1, help="forge-worker ci processes")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the runs")
    parser.add_argument("--keep", action="store_true", help="keep the platform home (logs) afterwards")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()

    steps = args.runs * args.projects * len(PHASES)
    floor = asyncio.run(_floor(steps, args.concurrency))
    home = Path(tempfile.mkdtemp(prefix="forge-bench-pipelines-"))
    repo = home / "repos" / "mono.git"
    shas = _generate(repo, args.projects, args.runs)
    os.environ["FORGE_WORKER__CONCURRENCY"] = str(args.concurrency)
    os.environ["FORGE_ENGINE__MAX_PARALLEL"] = str(args.concurrency)
    extra: list[ServiceProcess] = []
    try:
        started = time.perf_counter()
        plat, _ = platform_up(home / "platform")
        up = time.perf_counter() - started
        for number in range(2, args.ci_workers + 1):
            name = f"worker-ci-{number}"
            argv = [binary("forge-worker"), "ci"]
            log = home / "platform" / "logs" / f"{name}.log"
            extra.append(start_service(name, argv, url="", ready=lambda: True, log=log, env=plat.env))
        pids = {**plat.pids, **{proc.name: proc.pid for proc in extra}, KERNEL: KTHREADD}
        before = _cpu_seconds(pids)
        outcome = asyncio.run(_pipelines(plat, repo, shas, args.timeout))
        after = _cpu_seconds(pids)
    finally:
        for proc in extra:
            proc.stop()
        platform_down(home / "platform")
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    ok = sum(run["status"] == "success" for run in outcome.runs)
    durations = sorted(_seconds(run["created_at"], run["completed_at"]) for run in outcome.runs if run["completed_at"])
    print(f"machine: {machine()}")
    print(
        f"{args.runs} runs x {args.projects} projects x {len(PHASES)} phases x 1 step = {steps} steps; "
        f"FORGE_WORKER__CONCURRENCY={args.concurrency} FORGE_ENGINE__MAX_PARALLEL={args.concurrency}, "
        f"{args.ci_workers} CI worker process(es); platform up in {up:.1f}s"
        + (f"; home kept at {home}" if args.keep else "")
    )
    if len(durations) < len(outcome.runs):
        print(f"NOT FINAL after --timeout: {len(outcome.runs) - len(durations)} runs")
    print(f"runs succeeded          {ok}/{len(outcome.runs)} ({100 * ok / len(outcome.runs):.1f}%)")
    print(f"steps succeeded         {outcome.steps_ok}/{outcome.steps} (of {steps} expected)")
    print(f"wall (POSTs → last run) {outcome.wall:8.1f} s")
    print(f"steps/s                 {outcome.steps / outcome.wall:8.1f}")
    print(f"run duration p50        {_quantile(durations, 0.5):8.1f} s")
    print(f"run duration p99        {_quantile(durations, 0.99):8.1f} s")
    print(f"floor: {steps} x sh -c true, {args.concurrency} at once {floor:8.2f} s ({steps / floor:.0f} processes/s)")
    print(f"ratio wall / floor      {outcome.wall / floor:8.1f}x")
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    kernel = used.pop(KERNEL)
    total = sum(used.values())
    print(f"CPU seconds during the runs (process and its children): {total:.1f} s in all")
    for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
        print(f"  {name:<18} {seconds:7.1f} s  {100 * seconds / total:5.1f}%  {1000 * seconds / steps:6.1f} ms/step")
    print(
        f"  kernel threads     {kernel:7.1f} s  (not in the total: the machine's, whoever caused it) "
        f"{1000 * kernel / steps:6.1f} ms/step"
    )
    for run in outcome.runs:
        if run["status"] != "success":
            print(f"run {run['id']} {run['status']}: {run['error']}")
    if args.json:
        headline = {
            "runs": len(outcome.runs),
            "runs_ok": ok,
            "steps_ok": outcome.steps_ok,
            "wall_s": round(outcome.wall, 2),
            "floor_s": round(floor, 2),
            "ratio": round(outcome.wall / floor, 2),
            "cpu_ms_per_step": round(1000 * total / steps, 2),
            "ci_worker_cpu_ms_per_step": round(1000 * used["worker-ci"] / steps, 2),
            "kernel_threads_cpu_ms_per_step": round(1000 * kernel / steps, 2),
        }
        print(json.dumps(headline))


def _generate(repo: Path, projects: int, runs: int) -> list[str]:
    """The repository with ``projects`` projects, then ``runs`` commits each changing one file; their shas."""
    files: dict[str, str | None] = {}
    for index in range(projects):
        phases = "".join(f"  {phase}:\n    steps:\n      - {{name: {phase}, run: 'true'}}\n" for phase in PHASES)
        files[f"p{index:03d}/.forge/project.yaml"] = f"name: p{index:03d}\nphases:\n{phases}"
        files[f"p{index:03d}/src.txt"] = "v0\n"
    commit_files(repo, files, "initial")
    return [commit_files(repo, {"bench.txt": f"{number}\n"}, f"change {number}") for number in range(runs)]


async def _floor(count: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def spawn() -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec("sh", "-c", "true")
            if await proc.wait() != 0:
                raise RuntimeError("sh -c true failed")

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(spawn())
    return time.perf_counter() - started


async def _pipelines(plat: Platform, repo: Path, shas: list[str], timeout: float) -> Outcome:
    limits = httpx.Limits(max_connections=50)
    clone_url = str(repo.resolve())  # noqa: ASYNC240 - once, before anything runs
    source = token_source(plat.api_url, plat.home)  # the embedded issuer's forge-cli client, as the CLI does
    auth = BearerAuth(source) if source is not None else None
    async with httpx.AsyncClient(base_url=plat.api_url, timeout=60, limits=limits, auth=auth) as client:
        resp = await client.post("/v1/repositories", json={"name": REPOSITORY, "clone_url": clone_url})
        resp.raise_for_status()
        started = time.time()

        async def create(sha: str) -> str:
            body = {"repository": REPOSITORY, "commit_sha": sha, "branch": "main", "base_sha": None}
            created = await client.post("/v1/runs", json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /v1/runs answered {created.status_code}: {created.text}")
            return str(created.json()["id"])

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(create(sha)) for sha in shas]
        ids = {task.result() for task in tasks}
        runs = await _wait(client, ids, timeout)
        ends = [datetime.fromisoformat(run["completed_at"]).timestamp() for run in runs if run["completed_at"]]
        wall = (max(ends) if len(ends) == len(runs) else time.time()) - started
        steps = steps_ok = 0
        for run in runs:
            executions = (await client.get(f"/v1/runs/{run['id']}/executions")).json()
            for phase in executions["phases"]:
                for task in phase["tasks"]:
                    steps += len(task["steps"])
                    steps_ok += sum(step["status"] == "success" for step in task["steps"])
    return Outcome(runs=runs, wall=wall, steps=steps, steps_ok=steps_ok)


async def _wait(client: httpx.AsyncClient, ids: set[str], timeout: float) -> list[dict[str, Any]]:
    """Every run of ``ids`` once all are final, or as they are when ``timeout`` has passed.

    While waiting it only counts unfinished runs (``limit=1``, reading ``total``), so watching costs
    the API next to nothing; the runs themselves are read once at the end.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        unfinished = 0
        for status in ("pending", "running"):
            params: dict[str, str | int] = {"repository": REPOSITORY, "status": status, "limit": 1}
            unfinished += (await client.get("/v1/runs", params=params)).json()["total"]
        if not unfinished:
            break
        await asyncio.sleep(1.0)
    runs: list[dict[str, Any]] = []
    while True:
        params = {"repository": REPOSITORY, "limit": 500, "offset": len(runs)}
        page = (await client.get("/v1/runs", params=params)).json()
        runs += page["items"]
        if not page["items"]:
            return [run for run in runs if run["id"] in ids]


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) of each service and its descendants, reaped children included."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])  # proc(5) fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime)
        seconds[pid] = sum(int(value) for value in fields[11:15]) / tick
    services = {pid: name for name, pid in pids.items()}
    used = dict.fromkeys(pids, 0.0)
    for pid, cpu in seconds.items():
        ancestor = pid
        while ancestor > 1 and ancestor not in services:
            ancestor = parents.get(ancestor, 0)
        if ancestor in services:
            used[services[ancestor]] += cpu
    return used


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()

"""Chaos under load (issue 11): concurrent pipelines on the embedded platform while processes die.

    .venv/bin/python bench/chaos.py [--runs 100 --projects 5 --step-seconds 0.3 --ci-workers 3
                                     --concurrency 4 --kill-every 5 --json]

Starts the embedded platform with ``platform_up`` (as bench/pipelines.py: NATS, PostgreSQL, S3, the
registry, forge-api, forge-controller with the local engine, the workers) plus ``--ci-workers`` - 1
more ``forge-worker ci`` processes, generates a repository of ``--projects`` projects with the phases
check, build and test (one step each, ``--step-seconds`` long), and creates ``--runs`` runs at once
through the REST API (one per commit, every project affected). While they run it

* SIGKILLs a random worker process (discovery, a CI worker, artifact+release) every ``--kill-every``
  seconds and starts it again at once;
* SIGKILLs NATS, then the API, then PostgreSQL, once each, when 20 %, 40 % and 60 % of the steps
  have finished, and starts each again on its port and data (a crash and a restart).

Measured (how):

* runs succeeded / failed / stuck: the runs' statuses through the API at the end; stuck = not final
  when every other run was final and no step finished for ``--stall`` seconds (or at ``--timeout``).
* steps executed twice: every step appends ``start`` and ``done`` lines (run, project, step,
  attempt, the pid of the forge-worker running it, time) to a ledger file on the host (the CI
  sandbox is off for that). A step counts as
  executed twice when it *started again after it had completed once* (a ``start`` after its first
  ``done``): it could then have reported success before it ran again. Steps started again after a
  SIGKILL interrupted them (no ``done`` yet) are counted apart, as ``steps_rerun_unfinished``.
  Of those, ``steps_twice_after_success`` started again after their outcome was stored (the first
  settled record or result of their job in ``pipeline-results``, by JetStream's clock): the issue's
  target ("no step runs twice after it reported success") is that figure at 0; the others ended
  while, or after, their worker died (``steps_twice_done_after_kill``: done after the SIGKILL).
  Each step executed twice is listed with the moment its worker was SIGKILLed relative to its first
  ``done``; ``steps_twice_done_after_kill`` counts those whose ``done`` came *after* their worker
  was killed (the step outlived its worker by the moment the reaper needs to kill it: no worker
  could have reported it).
* jobs finished from a settled outcome (``steps_resumed``: a worker died after the step ended, the
  redelivery finished it without running it) and duplicate deliveries acked (a stored result found),
  counted in the workers' logs; so are the deliveries that found another worker's live claim and
  waited (``claim_waits``) and the jobs a worker left after its claim was taken over (``claims_lost``).
* jobs in the DLQ: messages in the ``pipeline-dlq`` stream at the end.
* recovery: every 0.25 s the number of finished steps is read from PostgreSQL; a fault's recovery is
  the time from the fault until that number first grows again (PostgreSQL unreadable counts as no
  progress). ``max_step_delay_s`` is, per step, the time from its first start to its completion:
  what one run waits when the worker running its step is killed (JetStream redelivers after
  ``ack_wait``).

Ends with one JSON line with ``--json``: ``{"runs", "runs_ok", "runs_failed", "runs_stuck",
"steps_twice", "dlq", "max_recovery_s"}`` and a few more figures (``steps_resumed``,
``duplicates_acked``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from nats.js.errors import NotFoundError as JetStreamNotFound

from forge.adapters.oidc_client import BearerAuth
from forge.cli.api_client import token_source
from forge.cli.platform import Platform, platform_down, platform_up
from forge.domain.messages import result_subject
from forge.embedded.nats import start_nats
from forge.embedded.postgres import start_postgres
from forge.embedded.process import binary, http_ready, process_alive, start_service
from forge.testing.gitrepos import commit_files
from forge.testing.measure import machine
from forge.workflows.workers.settling import settled_subject

FINAL = {"success", "failed", "cancelled"}
#: A step's ledger line, with the pid of the forge-worker running it (its nearest ancestor of that name).
LEDGER_SH = """#!/bin/sh
p=$$
while [ "$p" -gt 1 ]; do
  case "$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)" in *forge-worker*) break ;; esac
  p=$(cut -d')' -f2 "/proc/$p/stat" | awk '{print $2}')
done
echo "$1 $FORGE_RUN_ID $FORGE_PROJECT $FORGE_STEP $FORGE_ATTEMPT $p $(date +%s.%N)" >> LEDGER
"""
PHASES = ("check", "build", "test")
REPOSITORY = "bench/chaos"
WORKERS = {"worker-discovery": ["discovery"], "worker-release": ["artifact", "release"]}
RESTARTS = (("nats", 0.2), ("api", 0.4), ("postgres", 0.6))


@dataclass
class Fault:
    kind: str  # worker-<name>, nats, api, postgres
    at: float  # monotonic time of the SIGKILL
    finished: int  # steps finished at that moment (-1: unknown)
    back_after: float = 0.0  # seconds until the process was ready again
    recovery: float | None = None  # seconds until finished steps grew again
    wall: float = field(default_factory=time.time)  # the moment on the ledger's clock
    pid: int = 0  # the process killed


@dataclass
class Progress:
    """Finished steps in PostgreSQL, sampled every 0.25 s."""

    dsn: str
    finished: int = 0
    runs_final: int = 0
    changed_at: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def follow(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                count = await conn.fetchval(
                    "SELECT count(*) FROM step_executions WHERE status IN ('success', 'failed')", timeout=2
                )
                self.runs_final = await conn.fetchval(
                    "SELECT count(*) FROM pipeline_runs WHERE status IN ('success', 'failed', 'cancelled')", timeout=2
                )
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
            else:
                now = time.monotonic()
                if count != self.finished:
                    self.finished, self.changed_at = int(count), now
                self.samples.append((now, int(count)))
            await asyncio.sleep(0.25)
        if conn is not None:
            await conn.close()

    def recovery(self, fault: Fault) -> float | None:
        base = fault.finished if fault.finished >= 0 else self._at(fault.at)
        for when, count in self.samples:
            if when > fault.at and count > base:
                return when - fault.at
        return None

    def _at(self, moment: float) -> int:
        before = [count for when, count in self.samples if when <= moment]
        return before[-1] if before else 0


class Chaos:
    """The platform's processes, killed and started again; ``plat.pids`` stays current for platform_down."""

    def __init__(self, plat: Platform, rng: random.Random) -> None:
        self.plat = plat
        self.rng = rng
        self.logs = plat.home / "logs"
        self.ports = {name: int(address.rsplit(":", 1)[1]) for name, address in plat.services.items()}

    def workers(self) -> list[str]:
        return [name for name in self.plat.pids if name.startswith("worker-")]

    def kill(self, name: str) -> None:
        pid = self.plat.pids[name]
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def start(self, name: str) -> None:
        if name == "nats":
            proc = start_nats(self.plat.home / "nats", self.ports["nats"])
        elif name == "postgres":
            proc = start_postgres(self.plat.home / "postgres", self.ports["postgres"])
        elif name == "api":
            api = self.plat.api_url
            argv = [binary("forge-api")]
            proc = start_service(
                "api", argv, url=api, ready=http_ready(f"{api}/readyz"), log=self.logs / "api.log", env=self.plat.env
            )
        else:
            argv = [binary("forge-worker"), *WORKERS.get(name, ["ci"])]
            log = self.logs / f"{name}.log"
            proc = start_service(name, argv, url="", ready=lambda: True, log=log, env=self.plat.env)
        self.plat.pids[name] = proc.pid
        self.plat.save()

    def crash(self, name: str) -> float:
        """SIGKILL ``name`` and start it again; seconds until it is ready."""
        self.kill(name)
        started = time.monotonic()
        self.start(name)
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--step-seconds", type=float, default=0.3, help="how long each step sleeps")
    parser.add_argument("--ci-workers", type=int, default=3, help="forge-worker ci processes")
    parser.add_argument("--concurrency", type=int, default=4, help="FORGE_WORKER__CONCURRENCY of each worker")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between two worker SIGKILLs")
    parser.add_argument("--stall", type=float, default=180.0, help="seconds without a finished step: stuck")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the runs")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the platform home (logs) afterwards")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="forge-bench-chaos-"))
    ledger = home / "ledger.txt"
    repo = home / "repos" / "mono.git"
    shas = _generate(repo, args.projects, args.runs, ledger, args.step_seconds)
    os.environ["FORGE_WORKER__CONCURRENCY"] = str(args.concurrency)
    os.environ["FORGE_ENGINE__MAX_PARALLEL"] = str(args.concurrency * args.ci_workers)
    os.environ["FORGE_CI__SANDBOX"] = "off"  # steps append to the host's ledger
    faults: list[Fault] = []
    resumed = duplicates = waits = lost = 0
    reported: dict[tuple[str, ...], float] = {}
    try:
        plat, _ = platform_up(home / "platform")
        for number in range(2, args.ci_workers + 1):
            name = f"worker-ci-{number}"
            log = plat.home / "logs" / f"{name}.log"
            proc = start_service(
                name, [binary("forge-worker"), "ci"], url="", ready=lambda: True, log=log, env=plat.env
            )
            plat.pids[name] = proc.pid
        plat.save()
        chaos = Chaos(plat, random.Random(args.seed))
        runs, progress, wall = asyncio.run(_drive(plat, chaos, repo, shas, faults, args))
        dlq = asyncio.run(_dlq(plat.env["FORGE_NATS__URL"]))
        doubled = [key for key, *_ in _ledger(ledger)[0]]
        reported = asyncio.run(_outcomes_stored(plat.env["FORGE_NATS__URL"], doubled))
    finally:
        platform_down(home / "platform")
        resumed, duplicates, waits, lost = _worker_logs(home / "platform" / "logs")
        if not args.keep:
            shutil.rmtree(home / "platform", ignore_errors=True)
    twice, rerun, delay = _ledger(ledger)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    headline = _report(args, runs, faults, progress, wall, dlq, len(twice), rerun, delay, home if args.keep else None)
    print(f"jobs finished from a settled outcome (not run again): {resumed}; duplicate deliveries acked: {duplicates}")
    print(f"deliveries that waited on another worker's claim: {waits}; jobs left after a lost claim: {lost}")
    after_kill = 0  # done only after the worker running it was SIGKILLed: it could never have been reported
    after_success = 0  # started again after its outcome was stored: what the target forbids
    for key, done, again, pid in twice:
        stored = reported.get(key)
        after_success += stored is not None and stored < again
        killed = next((f for f in faults if f.pid == pid), None)
        if pid <= 1 or (killed is not None and killed.wall < done):  # pid 1: no forge-worker above it any more
            after_kill += 1
        if pid <= 1:
            cause = "its worker was already dead (no forge-worker among its ancestors)"
        elif killed is not None:
            cause = f"its worker ({pid}) SIGKILLed at done{killed.wall - done:+.3f} s"
        else:
            cause = f"its worker ({pid}) was not killed"
        outcome = (
            "never stored before" if stored is None or stored >= again else f"stored {again - stored:.2f} s before"
        )
        print(f"twice: {' '.join(key)}: started again {again - done:.2f} s after it was done ({outcome}); {cause}")
    if args.json:
        extra = {
            "steps_twice_after_success": after_success,
            "steps_twice_done_after_kill": after_kill,
            "steps_resumed": resumed,
            "duplicates_acked": duplicates,
            "claim_waits": waits,
            "claims_lost": lost,
        }
        print(json.dumps({**headline, **extra}))


def _generate(repo: Path, projects: int, runs: int, ledger: Path, seconds: float) -> list[str]:
    files: dict[str, str | None] = {"ledger.sh": LEDGER_SH.replace("LEDGER", str(ledger))}
    run = f"sh ../ledger.sh start; sleep {seconds}; sh ../ledger.sh done"
    for index in range(projects):
        phases = "".join(f'  {phase}:\n    steps:\n      - {{name: {phase}, run: "{run}"}}\n' for phase in PHASES)
        files[f"p{index:03d}/.forge/project.yaml"] = f"name: p{index:03d}\nphases:\n{phases}"
        files[f"p{index:03d}/src.txt"] = "v0\n"
    commit_files(repo, files, "initial")
    return [commit_files(repo, {"bench.txt": f"{number}\n"}, f"change {number}") for number in range(runs)]


async def _drive(
    plat: Platform, chaos: Chaos, repo: Path, shas: list[str], faults: list[Fault], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], Progress, float]:
    source = token_source(plat.api_url, plat.home)
    auth = BearerAuth(source) if source is not None else None
    expected = len(shas) * args.projects * len(PHASES)
    progress = Progress(plat.env["FORGE_DATABASE__URL"])
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=plat.api_url, timeout=60, auth=auth) as client:
        clone_url = str(repo.resolve())  # noqa: ASYNC240 - once, before anything runs
        (await client.post("/v1/repositories", json={"name": REPOSITORY, "clone_url": clone_url})).raise_for_status()
        started = time.monotonic()

        async def create(sha: str) -> str:
            body = {"repository": REPOSITORY, "commit_sha": sha, "branch": "main", "base_sha": None}
            created = await client.post("/v1/runs", json=body)
            created.raise_for_status()
            return str(created.json()["id"])

        async with asyncio.TaskGroup() as group:
            follower = group.create_task(progress.follow(stop))
            ids = set(await asyncio.gather(*(create(sha) for sha in shas)))
            pending = list(RESTARTS)
            next_kill = time.monotonic() + args.kill_every
            while True:
                now = time.monotonic()
                if progress.runs_final >= len(ids) or now - started > args.timeout:
                    break
                if now - progress.changed_at > args.stall:
                    break
                if pending and progress.finished >= pending[0][1] * expected:
                    name, _ = pending.pop(0)
                    faults.append(Fault(name, time.monotonic(), progress.finished, pid=chaos.plat.pids[name]))
                    faults[-1].back_after = await asyncio.to_thread(chaos.crash, name)
                elif now >= next_kill and progress.finished < expected:
                    name = chaos.rng.choice(chaos.workers())
                    faults.append(Fault(name, time.monotonic(), progress.finished, pid=chaos.plat.pids[name]))
                    faults[-1].back_after = await asyncio.to_thread(chaos.crash, name)
                    next_kill = time.monotonic() + args.kill_every
                await asyncio.sleep(0.1)
            runs = await _final_runs(client, ids, started, args)
            wall = time.monotonic() - started
            await asyncio.sleep(1.0)  # a last sample after the end
            stop.set()
            await follower
    for fault in faults:
        fault.recovery = progress.recovery(fault)
    return runs, progress, wall


async def _final_runs(
    client: httpx.AsyncClient, ids: set[str], started: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The runs once every one is final, or as they are when none finished for ``--stall`` seconds."""
    last_change, last_final = time.monotonic(), -1
    while True:
        try:
            runs: list[dict[str, Any]] = []
            while True:
                params: dict[str, str | int] = {"repository": REPOSITORY, "limit": 500, "offset": len(runs)}
                page = (await client.get("/v1/runs", params=params)).json()
                runs += page["items"]
                if not page["items"]:
                    break
        except (httpx.HTTPError, KeyError, ValueError):
            await asyncio.sleep(1.0)
            continue
        runs = [run for run in runs if run["id"] in ids]
        final = sum(run["status"] in FINAL for run in runs)
        if final != last_final:
            last_change, last_final = time.monotonic(), final
        now = time.monotonic()
        if final == len(ids) or now - last_change > args.stall or now - started > args.timeout:
            return runs
        await asyncio.sleep(1.0)


async def _outcomes_stored(url: str, steps: list[tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """When each step's outcome was first stored (``pipeline-results``: its settled record or its result, by
    JetStream's clock, the host's): from then on the step counts as reported. Chaos steps have no retries,
    so their job key is attempt 0's, ``ci.<run>.<phase>.<project>.<step>.a0`` (the phase is the step's name)."""
    nc = await nats.connect(url)
    stored: dict[tuple[str, ...], float] = {}
    try:
        js = nc.jetstream()
        for run, project, step in steps:
            key = f"ci.{run}.{step}.{project}.{step}.a0"
            for subject in (settled_subject(key), result_subject(key)):
                try:
                    msg = await js.get_msg("pipeline-results", seq=1, subject=subject, next=True)
                except JetStreamNotFound:
                    continue
                if msg.time is not None:
                    at = msg.time.timestamp()
                    stored[(run, project, step)] = min(at, stored.get((run, project, step), at))
    finally:
        await nc.close()
    return stored


async def _dlq(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("pipeline-dlq")
        return int(info.state.messages)
    finally:
        await nc.close()


def _worker_logs(logs: Path) -> tuple[int, int, int, int]:
    """(jobs finished from a settled outcome, duplicate deliveries acked, deliveries that waited on another
    worker's live claim, jobs a worker left after its claim was taken over) in the workers' logs."""
    resumed = duplicates = waits = lost = 0
    for path in logs.glob("worker-*.log"):
        text = path.read_text(errors="replace")
        resumed += text.count("finishing it without running it again")
        duplicates += text.count("acking the duplicate")
        waits += text.count("is claimed by another worker")
        lost += text.count("was taken over by another worker")
    return resumed, duplicates, waits, lost


Twice = tuple[tuple[str, ...], float, float, int]  # (run, project, step), first done, start after it, its worker


def _ledger(path: Path) -> tuple[list[Twice], int, float]:
    """(steps started again after they completed, steps started again before completing, longest first
    start → completion in seconds)."""
    starts: dict[tuple[str, ...], list[float]] = defaultdict(list)
    dones: dict[tuple[str, ...], list[float]] = defaultdict(list)
    worker: dict[tuple[str, ...], int] = {}  # the worker of each step's first done
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) != 7:
            continue
        kind, run, project, step, _attempt, pid, stamp = parts
        key = (run, project, step)
        (starts if kind == "start" else dones)[key].append(float(stamp))
        if kind == "done" and float(stamp) == min(dones[key]):
            worker[key] = int(pid)
    twice = [
        (key, min(done), min(start for start in starts[key] if start > min(done)), worker[key])
        for key, done in dones.items()
        if any(start > min(done) for start in starts[key])
    ]
    rerun = sum(1 for key, begun in starts.items() if len(begun) > 1) - len(twice)
    delay = max((min(dones[key]) - min(begun) for key, begun in starts.items() if dones.get(key)), default=0.0)
    return twice, rerun, delay


def _report(
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    faults: list[Fault],
    progress: Progress,
    wall: float,
    dlq: int,
    twice: int,
    rerun: int,
    delay: float,
    kept: Path | None,
) -> dict[str, Any]:
    ok = sum(run["status"] == "success" for run in runs)
    failed = sum(run["status"] in {"failed", "cancelled"} for run in runs)
    stuck = args.runs - ok - failed
    expected = args.runs * args.projects * len(PHASES)
    print(f"machine: {machine()}")
    print(
        f"{args.runs} runs x {args.projects} projects x {len(PHASES)} steps of {args.step_seconds} s"
        f" = {expected} steps;"
        f" {args.ci_workers} CI workers x concurrency {args.concurrency}; a worker SIGKILLed every"
        f" {args.kill_every} s" + (f"; home kept at {kept}" if kept else "")
    )
    print(f"runs succeeded {ok}, failed {failed}, stuck {stuck} (wall {wall:.1f} s)")
    print(f"steps finished {progress.finished}/{expected}; executed twice after completing: {twice}")
    print(f"steps started again after a SIGKILL interrupted them: {rerun}; longest first start -> done {delay:.1f} s")
    print(f"jobs in the DLQ: {dlq}")
    recoveries = [fault.recovery for fault in faults]
    print(f"faults: {len(faults)} ({sum(f.kind.startswith('worker') for f in faults)} worker SIGKILLs)")
    for fault in faults:
        seen = "never" if fault.recovery is None else f"{fault.recovery:5.1f} s"
        print(f"  {fault.kind:<18} back in {fault.back_after:4.1f} s, progress after {seen}")
    for run in runs:
        if run["status"] != "success":
            print(f"run {run['id']} {run['status']}: {run.get('error')}")
    known = [r for r in recoveries if r is not None]
    worst = max(known) if len(known) == len(recoveries) and known else None
    if args.json:
        by_kind = {
            kind: round(max((f.recovery or 0.0) for f in faults if f.kind == kind), 2)
            for kind in ("nats", "api", "postgres")
            if any(f.kind == kind for f in faults)
        }
        return {
            "runs": args.runs,
            "runs_ok": ok,
            "runs_failed": failed,
            "runs_stuck": stuck,
            "steps_twice": twice,
            "dlq": dlq,
            "max_recovery_s": round(worst, 2) if worst is not None else None,
            "recovery_s": by_kind,
            "worker_kills": sum(f.kind.startswith("worker") for f in faults),
            "steps_rerun_unfinished": rerun,
            "max_step_delay_s": round(delay, 2),
            "wall_s": round(wall, 1),
        }
    return {}


if __name__ == "__main__":
    main()

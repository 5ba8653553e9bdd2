"""Rate limits in PostgreSQL: what a take costs, and what it adds to ``POST /v1/runs`` (issue 10's leftover).

    .venv/bin/python bench/limits.py [--requests 400 --concurrency 1 8 --takes 2000 --json]

Starts PostgreSQL (a fresh, migrated database), NATS, S3 and the local issuer (``api_services``), and
builds ``forge-api``'s services with its own composition root (``forge.api.__main__.build``), so the
PostgreSQL limiter is the one ``forge-api`` uses, on the store's pool. Then, in this process:

- **takes**: ``--takes`` sequential takes on one bucket, then the same number from 16 tasks at once
  (one bucket: they serialise on its row lock; and 16 buckets), for the in-process bucket
  (``MemoryRateLimiter``) and ``PostgresRateLimiter``; microseconds per take;
- **POST /v1/runs**: two apps on the same services, one with each limiter (limits of 10⁹ per minute,
  so nothing is refused but every request still takes its two tokens: per identity, per repository),
  driven through httpx's ASGI transport (no sockets: the difference is the limiter's, not the network's)
  with ``--requests`` run creations per app and concurrency, in five slices alternating between the
  two apps so both see the same background load. Latency p50/p99 and requests per second of each,
  and the difference.

``--json`` ends the output with one JSON line of the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from forge.api.__main__ import build
from forge.api.app import create_app
from forge.api.auth.limits import RateLimits
from forge.ports.fakes import MemoryRateLimiter
from forge.ports.limits import RateLimiter
from forge.settings import Settings
from forge.testing.measure import api_services, machine

SLICES = 5
UNLIMITED = 1e9  # per minute: never refused, every take still written


async def _per_take(take: Callable[[int], Awaitable[object]], takes: int, tasks: int) -> float:
    """Microseconds per take: ``takes`` takes from ``tasks`` tasks at once (task i takes with argument i)."""
    per_task = takes // tasks

    async def worker(i: int) -> None:
        for _ in range(per_task):
            await take(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return (time.perf_counter() - start) / (per_task * tasks) * 1e6


async def _takes(limiter: RateLimiter, takes: int) -> dict[str, float]:
    await _per_take(lambda _: limiter.take("bench", "warm", UNLIMITED), 200, 1)
    return {
        "sequential_us": await _per_take(lambda _: limiter.take("bench", "one", UNLIMITED), takes, 1),
        "16_tasks_one_bucket_us": await _per_take(lambda _: limiter.take("bench", "one", UNLIMITED), takes, 16),
        "16_tasks_16_buckets_us": await _per_take(lambda i: limiter.take("bench", f"k{i}", UNLIMITED), takes, 16),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _creations(client: httpx.AsyncClient, n: int, concurrency: int, counter: list[int]) -> list[float]:
    latencies: list[float] = []

    async def worker() -> None:
        while len(latencies) < n:
            counter[0] += 1
            body = {"repository": "acme/bench", "commit_sha": f"{counter[0]:040x}"}
            start = time.perf_counter()
            resp = await client.post("/v1/runs", json=body)
            latencies.append(time.perf_counter() - start)
            if resp.status_code != 201:
                raise RuntimeError(f"POST /v1/runs answered {resp.status_code}: {resp.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _bench(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(env)
    settings = Settings()
    out: dict[str, Any] = {}
    async with build(settings) as services:
        await services.database.migrate()
        assert services.rate_limiter is not None
        limiters: dict[str, RateLimiter] = {"memory": MemoryRateLimiter(), "postgres": services.rate_limiter}
        out["takes"] = {name: await _takes(limiter, args.takes) for name, limiter in limiters.items()}
        headers = {"Authorization": f"Bearer {env['FORGE_TOKEN']}"}
        clients = {}
        for name, limiter in limiters.items():
            limits = RateLimits(UNLIMITED, UNLIMITED, UNLIMITED, buckets=limiter)
            transport = httpx.ASGITransport(app=create_app(services, rate_limits=limits))  # type: ignore[arg-type]
            clients[name] = httpx.AsyncClient(transport=transport, base_url="http://forge.bench", headers=headers)
        repo = {"name": "acme/bench", "clone_url": "https://git.example/acme/bench.git"}
        assert (await clients["memory"].post("/v1/repositories", json=repo)).status_code == 201
        counter = [0]
        for client in clients.values():  # warm-up: connections, caches, code paths
            await _creations(client, 50, 4, counter)
        runs: dict[str, Any] = {}
        for concurrency in args.concurrency:
            latencies: dict[str, list[float]] = {"memory": [], "postgres": []}
            seconds = dict.fromkeys(latencies, 0.0)
            for i in range(SLICES):
                order = ("memory", "postgres") if i % 2 == 0 else ("postgres", "memory")
                for name in order:
                    start = time.perf_counter()
                    latencies[name] += await _creations(clients[name], args.requests // SLICES, concurrency, counter)
                    seconds[name] += time.perf_counter() - start
            runs[str(concurrency)] = {
                name: {
                    "p50_ms": statistics.median(values) * 1e3,
                    "p99_ms": _percentile(values, 0.99) * 1e3,
                    "rps": len(values) / seconds[name],
                }
                for name, values in latencies.items()
            }
        out["post_runs"] = runs
        for client in clients.values():
            await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=400, help="run creations per app and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--takes", type=int, default=2000, help="takes per series of the take benchmark")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, api_services(Path(tmp)) as env:
        out = asyncio.run(_bench(env, args))
    print(f"machine: {machine()}")
    for name, figures in out["takes"].items():
        print(f"take, {name:8}: " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()))
    headline: dict[str, Any] = {"takes": out["takes"]}
    for concurrency, by_name in out["post_runs"].items():
        mem, pg = by_name["memory"], by_name["postgres"]
        for name, fig in by_name.items():
            print(
                f"POST /v1/runs, concurrency {concurrency}, {name:8}: "
                f"p50 {fig['p50_ms']:.2f} ms, p99 {fig['p99_ms']:.2f} ms, {fig['rps']:.0f} req/s"
            )
        delta = pg["p50_ms"] - mem["p50_ms"]
        print(f"  postgres - memory: p50 {delta:+.2f} ms, throughput {pg['rps'] / mem['rps'] - 1:+.1%}")
        headline[f"post_runs_c{concurrency}"] = {
            "p50_ms_memory": round(mem["p50_ms"], 3),
            "p50_ms_postgres": round(pg["p50_ms"], 3),
            "p99_ms_memory": round(mem["p99_ms"], 3),
            "p99_ms_postgres": round(pg["p99_ms"], 3),
            "rps_ratio_postgres_to_memory": round(pg["rps"] / mem["rps"], 3),
        }
    if args.json:
        print(json.dumps(headline))


if __name__ == "__main__":
    main()

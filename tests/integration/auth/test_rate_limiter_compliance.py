"""RateLimiter compliance: the in-process fake and PostgreSQL (real server) pass the same tests.

Every test injects the clock (seconds; the PostgreSQL adapter then reads it instead of the
database's), so nothing depends on how fast the test runs. "Replicas" are limiters sharing one
store: the fake's are one object (it is per process by design), PostgreSQL's are separate pools —
two API processes' worth of connections.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from forge.adapters.postgres_limits import PostgresRateLimiter
from forge.embedded.process import ServiceProcess
from forge.errors import InvalidInputError
from forge.ports.fakes import MemoryRateLimiter
from forge.ports.limits import TOLERANCE, RateLimiter, retry_after
from forge.testing.postgres import create_database_async

from .limits_support import Clock, migrated

Replicas = Callable[[int], Awaitable[list[RateLimiter]]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "postgres"])
async def replicas(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Replicas]:
    """``await replicas(n)``: n limiters on one store (the first is the one most tests use)."""
    if request.param == "memory":
        fake = MemoryRateLimiter(clock)

        async def memory(n: int) -> list[RateLimiter]:
            return [fake] * n

        yield memory
        return
    server: ServiceProcess = request.getfixturevalue("postgres_server")
    dsn = await create_database_async(server.url, f"t_{uuid.uuid4().hex[:16]}")
    await migrated(dsn)
    pools: list[asyncpg.Pool[asyncpg.Record]] = []

    async def postgres(n: int) -> list[RateLimiter]:
        made: list[RateLimiter] = []
        for _ in range(n):
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
            pools.append(pool)
            made.append(PostgresRateLimiter(pool, clock=clock))
        return made

    try:
        yield postgres
    finally:
        for pool in pools:
            await pool.close()


@pytest.fixture
async def limiter(replicas: Replicas) -> RateLimiter:
    return (await replicas(1))[0]


async def _takes(
    limiter: RateLimiter, n: int, limit: str = "runs", key: str = "jane", per_minute: float = 10
) -> list[float | None]:
    return [await limiter.take(limit, key, per_minute) for _ in range(n)]


async def test_a_full_bucket_holds_per_minute_tokens(limiter: RateLimiter) -> None:
    assert await _takes(limiter, 10) == [None] * 10  # burst = per_minute
    wait = await limiter.take("runs", "jane", 10)
    assert wait == pytest.approx(6 - TOLERANCE)  # one token every 6 s
    assert wait is not None
    assert retry_after(wait) == 6


async def test_tokens_refill_evenly_and_never_beyond_a_minutes_worth(limiter: RateLimiter, clock: Clock) -> None:
    assert await _takes(limiter, 2, per_minute=2) == [None, None]
    assert await limiter.take("runs", "jane", 2) == pytest.approx(30 - TOLERANCE)
    clock.now += 15
    assert await limiter.take("runs", "jane", 2) == pytest.approx(15 - TOLERANCE)
    clock.now += 15
    assert await limiter.take("runs", "jane", 2) is None
    assert await limiter.take("runs", "jane", 2) == pytest.approx(30 - TOLERANCE)
    clock.now += 3600
    assert await _takes(limiter, 3, per_minute=2) == [None, None, pytest.approx(30 - TOLERANCE)]


async def test_a_refused_take_spends_nothing(limiter: RateLimiter, clock: Clock) -> None:
    await _takes(limiter, 3, per_minute=3)
    waits = await _takes(limiter, 5, per_minute=3)
    assert waits == [pytest.approx(20 - TOLERANCE)] * 5  # hammering does not push the wait further
    clock.now += 20
    assert await limiter.take("runs", "jane", 3) is None


@pytest.mark.parametrize("per_minute", [0.25, 1, 3, 7, 13, 60, 61, 1000])
async def test_retry_after_is_whole_seconds_and_enough(limiter: RateLimiter, clock: Clock, per_minute: float) -> None:
    """Waiting ``Retry-After`` seconds is always enough, and it is the wait rounded up, at least 1."""
    for _ in range(3):
        while (wait := await limiter.take("runs", "jane", per_minute)) is None:
            pass
        seconds = retry_after(wait)
        assert 0 < wait <= 60 / per_minute
        assert seconds - 1 < wait <= seconds or seconds == 1
        clock.now += seconds
        assert await limiter.take("runs", "jane", per_minute) is None


async def test_less_than_one_per_minute_still_allows_one(limiter: RateLimiter, clock: Clock) -> None:
    assert await limiter.take("runs", "jane", 0.5) is None
    assert retry_after(await limiter.take("runs", "jane", 0.5) or 0) == 120
    clock.now += 120
    assert await limiter.take("runs", "jane", 0.5) is None


async def test_keys_and_limits_are_independent(limiter: RateLimiter) -> None:
    await _takes(limiter, 2, per_minute=2)
    assert await limiter.take("runs", "jane", 2) is not None
    assert await limiter.take("runs", "joe", 2) is None
    assert await limiter.take("runs", "Jane", 2) is None  # keys are exact (callers fold case)
    assert await limiter.take("webhooks", "jane", 2) is None


async def test_any_key_is_a_key(limiter: RateLimiter) -> None:
    """Keys come from tokens and bodies: NUL, lone surrogates, 10 kB, non-BMP; each its own bucket."""
    keys = ["", "a\x00b", "a", "\ud800", "x" * 10_000, "x" * 10_001, "🦊/repo", "a\x00c"]
    for key in keys:
        assert await limiter.take("runs", key, 1) is None
    for key in keys:
        assert await limiter.take("runs", key, 1) is not None


async def test_zero_disables_a_limit(limiter: RateLimiter) -> None:
    assert await _takes(limiter, 50, per_minute=0) == [None] * 50
    assert await limiter.purge() == 0  # no bucket was even made
    await _takes(limiter, 1, per_minute=1)
    assert await limiter.take("runs", "jane", 0) is None  # 0 ignores a spent bucket too


async def test_purge_drops_full_buckets_only(limiter: RateLimiter, clock: Clock) -> None:
    await _takes(limiter, 2, key="spent", per_minute=2)
    await _takes(limiter, 1, key="half", per_minute=2)
    await _takes(limiter, 1, key="one", per_minute=60)
    clock.now += 30  # "one" refilled (1 s), "half" refilled (30 s), "spent" has 1 of 2
    assert await limiter.purge() == 2
    assert await limiter.purge() == 0
    assert await _takes(limiter, 2, key="spent", per_minute=2) == [None, pytest.approx(30 - TOLERANCE)]
    assert await _takes(limiter, 3, key="half", per_minute=2) == [None, None, pytest.approx(30 - TOLERANCE)]


@pytest.mark.parametrize(
    ("limit", "per_minute", "message"),
    [
        ("runs", -1, "per_minute must be 0 .no limit. or more"),
        ("runs", float("nan"), "per_minute must be a finite number"),
        ("runs", float("inf"), "per_minute must be a finite number"),
        ("runs", True, "per_minute must be a finite number"),
        ("", 1, "rate limit name '' is not 1-64 printable ASCII"),
        ("r" * 65, 1, "is not 1-64 printable ASCII"),
        ("runs\n", 1, "is not 1-64 printable ASCII"),
    ],
)
async def test_bad_input_is_refused_precisely(
    limiter: RateLimiter, limit: str, per_minute: float, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await limiter.take(limit, "jane", per_minute)


async def test_concurrent_takes_never_spend_more_than_the_bucket(replicas: Replicas) -> None:
    """50 takes at once on a bucket of 10, spread over two replicas: exactly 10 are admitted."""
    one, two = await replicas(2)
    waits = await asyncio.gather(*((one, two)[n % 2].take("runs", "jane", 10) for n in range(50)))
    assert waits.count(None) == 10
    assert all(wait is not None and 0 < wait <= 6 for wait in waits if wait is not None)


async def test_concurrent_first_takes_of_many_keys(replicas: Replicas) -> None:
    """Many buckets created at once from two replicas (primary-key conflicts on insert): each holds its 3."""
    one, two = await replicas(2)
    keys = [f"repo-{n}" for n in range(20)]
    waits = await asyncio.gather(*((one, two)[n % 2].take("repository_runs", keys[n % 20], 3) for n in range(100)))
    for n, key in enumerate(keys):
        assert [waits[i] for i in range(n, 100, 20)].count(None) == 3, key

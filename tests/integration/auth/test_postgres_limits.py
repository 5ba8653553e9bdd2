"""PostgresRateLimiter beyond the compliance suite: the database's clock, purging on its own, the schema,
and every way PostgreSQL can fail a take (→ ServiceUnavailableError, which the API lets through).

Also that ``forge-api``'s composition root picks this adapter (``forge.api.__main__.build``).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from forge.adapters import postgres_limits
from forge.adapters.postgres_limits import PostgresRateLimiter
from forge.api.__main__ import build
from forge.embedded.process import ServiceProcess, free_port
from forge.errors import ServiceUnavailableError
from forge.ports.limits import TOLERANCE
from forge.settings import AuthSettings, DatabaseSettings, NatsSettings, ObjectStoreSettings, Settings
from forge.testing.logs import log_records
from forge.testing.postgres import create_database_async

from .limits_support import Clock, migrated


@pytest.fixture
async def dsn(postgres_server: ServiceProcess) -> str:
    dsn = await create_database_async(postgres_server.url, f"t_{uuid.uuid4().hex[:16]}")
    await migrated(dsn)
    return dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    yield pool
    await pool.close()


async def test_replicas_share_the_database_clock(dsn: str, pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """No injected clock: the database's. One a minute, so the answer cannot depend on the test's speed."""
    other = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        one, two = PostgresRateLimiter(pool), PostgresRateLimiter(other)
        assert await one.take("runs", "jane", 1) is None
        wait = await two.take("runs", "jane", 1)
        assert wait is not None
        assert 0 < wait <= 60
        assert await two.take("runs", "joe", 1) is None
        full_at = await pool.fetchval("SELECT max(full_at) FROM rate_limit_buckets")
        now = await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
        assert now < full_at <= now + 60  # seconds of the database's clock
    finally:
        await other.close()


async def test_full_buckets_are_purged_on_their_own(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    clock = Clock()
    limiter = PostgresRateLimiter(pool, clock=clock, purge_every=60)
    for key in ("a", "b", "c"):
        assert await limiter.take("runs", key, 60) is None  # full again in 1 s
    clock.now += 59
    assert await limiter.take("runs", "d", 2) is None  # full again in 30 s; not a purge yet
    assert await pool.fetchval("SELECT count(*) FROM rate_limit_buckets") == 4
    clock.now += 1
    assert await limiter.take("runs", "e", 60) is None  # then the purge: a, b, c are full; d and e are not
    keys = await pool.fetch("SELECT key FROM rate_limit_buckets")
    assert {row["key"] for row in keys} == {hashlib.sha256(k.encode()).digest() for k in ("d", "e")}


async def test_the_table_is_unlogged_and_holds_no_raw_keys(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    limiter = PostgresRateLimiter(pool)
    await limiter.take("runs", "jane@example.com", 5)
    assert await pool.fetchval("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit_buckets'") == b"u"
    row = await pool.fetchrow("SELECT limit_name, key, admitted FROM rate_limit_buckets")
    assert row is not None
    assert (row["limit_name"], row["key"], row["admitted"]) == (
        "runs",
        hashlib.sha256(b"jane@example.com").digest(),
        True,
    )


async def test_a_take_stuck_behind_a_lock_times_out(dsn: str, pool: asyncpg.Pool[asyncpg.Record]) -> None:
    limiter = PostgresRateLimiter(pool, timeout=0.3)
    await limiter.take("runs", "jane", 5)
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT * FROM rate_limit_buckets FOR UPDATE")
            with pytest.raises(ServiceUnavailableError, match="taking a token of rate limit runs: PostgreSQL"):
                await limiter.take("runs", "jane", 5)
            assert await limiter.take("runs", "joe", 5) is None  # other buckets are not held up
        assert await limiter.take("runs", "jane", 5) is None  # and the pool is still usable
    finally:
        await holder.close()


async def test_a_failed_purge_is_logged_and_the_take_still_answers(
    dsn: str, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    clock = Clock()
    limiter = PostgresRateLimiter(pool, clock=clock, timeout=0.3, purge_every=60)
    await limiter.take("runs", "idle", 60)
    clock.now += 60  # "idle" is full and due for the purge, which a held row lock stalls
    holder = await asyncpg.connect(dsn)
    try:
        with log_records("forge.limits") as records:
            async with holder.transaction():
                await holder.execute("SELECT * FROM rate_limit_buckets FOR UPDATE")
                assert await limiter.take("runs", "jane", 60) is None
        assert [r.levelno for r in records] == [logging.WARNING]
        assert records[0].getMessage().startswith("rate limits: purging full rate-limit buckets: PostgreSQL")
        assert await pool.fetchval("SELECT count(*) FROM rate_limit_buckets") == 2
        clock.now += 60  # the next due purge works
        assert await limiter.take("runs", "jane", 60) is None
        assert await pool.fetchval("SELECT count(*) FROM rate_limit_buckets") == 1
    finally:
        await holder.close()


async def test_unreachable_closed_unmigrated_or_refusing_is_unavailable(
    postgres_server: ServiceProcess, dsn: str
) -> None:
    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/forge", min_size=0)
    with pytest.raises(ServiceUnavailableError, match="PostgreSQL is unavailable"):
        await PostgresRateLimiter(dead).take("runs", "jane", 5)
    await dead.close()
    with pytest.raises(ServiceUnavailableError, match="PostgreSQL is unavailable"):
        await PostgresRateLimiter(dead).take("runs", "jane", 5)
    bare = await create_database_async(postgres_server.url, f"t_{uuid.uuid4().hex[:16]}")
    unmigrated = await asyncpg.create_pool(bare, min_size=0)
    try:
        with pytest.raises(ServiceUnavailableError, match="not migrated"):
            await PostgresRateLimiter(unmigrated).take("runs", "jane", 5)
    finally:
        await unmigrated.close()
    # an error translate_errors does not know (a read-only server, as a standby or a full disk answers)
    read_only = await asyncpg.create_pool(dsn, min_size=0, server_settings={"default_transaction_read_only": "on"})
    try:
        with pytest.raises(ServiceUnavailableError, match="taking a token of rate limit runs: PostgreSQL refused"):
            await PostgresRateLimiter(read_only).take("runs", "jane", 5)
        with pytest.raises(ServiceUnavailableError, match="purging full rate-limit buckets: PostgreSQL refused"):
            await PostgresRateLimiter(read_only).purge()
    finally:
        await read_only.close()


async def test_forge_api_keeps_its_buckets_in_postgres(
    dsn: str, own_nats: ServiceProcess, object_settings: ObjectStoreSettings
) -> None:
    settings = Settings(
        database=DatabaseSettings(url=dsn),
        nats=NatsSettings(url=own_nats.url),
        objects=object_settings,
        auth=AuthSettings(issuer=f"http://127.0.0.1:{free_port()}/realms/forge"),  # down: retried on a token
    )
    async with build(settings) as services:
        assert isinstance(services.rate_limiter, PostgresRateLimiter)
        assert await services.rate_limiter.take("runs", "jane", 1) is None
        assert await services.rate_limiter.take("runs", "jane", 1) is not None


async def test_a_refused_bucket_is_answered_from_memory_until_its_wait_is_over(
    dsn: str, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    clock = Clock()
    limiter = PostgresRateLimiter(pool, clock=clock, timeout=0.3)
    assert [await limiter.take("runs", "jane", 3) for _ in range(3)] == [None, None, None]
    assert await limiter.take("runs", "jane", 3) == pytest.approx(20 - TOLERANCE)
    assert await limiter.take("runs", "joe", 3) is None
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT * FROM rate_limit_buckets FOR UPDATE")  # any statement now times out
            for _ in range(100):
                assert await limiter.take("runs", "jane", 3) == pytest.approx(20 - TOLERANCE)  # no statement
            clock.now += 19
            assert await limiter.take("runs", "jane", 3) == pytest.approx(1 - TOLERANCE)
            with pytest.raises(ServiceUnavailableError):  # what any other bucket's take gets meanwhile
                await limiter.take("runs", "joe", 3)
            clock.now += 1  # the wait is over: asked again
            with pytest.raises(ServiceUnavailableError):
                await limiter.take("runs", "jane", 3)
        assert await limiter.take("runs", "jane", 3) is None
    finally:
        await holder.close()


async def test_remembered_refusals_are_bounded(
    pool: asyncpg.Pool[asyncpg.Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_limits, "_MAX_REFUSED", 3)
    clock = Clock()
    limiter = PostgresRateLimiter(pool, clock=clock)
    for n in range(3):
        assert await limiter.take("runs", f"k{n}", 1) is None
        assert await limiter.take("runs", f"k{n}", 1) is not None
    clock.now += 60  # k0..k2 have waited theirs: dropped to make room
    await limiter.take("runs", "k3", 1)
    assert await limiter.take("runs", "k3", 1) is not None
    assert len(limiter._refused) == 1
    for n in range(4, 8):  # none has waited: past the bound, all are forgotten (the database still answers)
        await limiter.take("runs", f"k{n}", 1)
        assert await limiter.take("runs", f"k{n}", 1) is not None
        assert len(limiter._refused) <= 3
    assert await limiter.take("runs", "k4", 1) == pytest.approx(60 - TOLERANCE)

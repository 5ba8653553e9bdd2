"""``RateLimiter`` on PostgreSQL: token buckets every API replica shares (table ``rate_limit_buckets``, 0012).

A take is **one statement**: ``INSERT … ON CONFLICT DO UPDATE`` computes the step of
``forge.ports.limits.take_step`` in SQL from the stored ``full_at`` and the database's clock
(``statement_timestamp()``: one reading per statement), so there is no read-modify-write race — two
processes' takes on one bucket serialise on its row lock, and the second sees the first's row. A
bucket that does not exist yet is inserted full minus the token; concurrent first takes conflict on
the primary key and the losers update the winner's row. Only the clock of the database counts: API
replicas whose clocks disagree share one timeline. Tests inject a ``clock`` instead (seconds; the
same for every process that shares it).

The pool is the store's (:meth:`PostgresRateLimiter.of_store`): no connection of its own. A take is
bounded by ``timeout`` (waiting for a connection included): PostgreSQL slow or down →
``ServiceUnavailableError`` within that time, and the caller decides (the API lets the request
through: ``forge.api.auth.limits``). Every ``purge_every`` seconds (of the clock), a take also
deletes the full buckets (a sequential scan of a table that holds the keys active in the last
minute or so); a failed purge is logged and retried on the next take.

**Refusals are remembered** until their wait is over: tokens only come back with time, and other
replicas can only spend them, so a bucket that answered "wait W" at some instant between sending the
statement (local time ``s``) and reading its answer (``r``) is still short of a token until local
time ``s + W`` at the earliest. Until then a take of that bucket is refused in this process without
a statement, with the wait ``r + W - now`` (an upper bound: ``Retry-After`` stays enough). A client
hammering while limited costs PostgreSQL one statement per wait, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from forge.adapters._postgres_rows import translate_errors
from forge.errors import ForgeError, ServiceUnavailableError
from forge.ports.limits import check_limit, check_per_minute, window

if TYPE_CHECKING:
    from forge.adapters.postgres_store import PostgresStore

__all__ = ["PostgresRateLimiter"]

_log = logging.getLogger("forge.limits")
_MAX_REFUSED = 10_000  # refusals remembered; past it, the ended ones are dropped (then all, if need be)

# $1 is the clock reading of a test, NULL for the database's own (constant within the statement).
_NOW = "coalesce($1::float8, extract(epoch FROM statement_timestamp())::float8)"
# take_step in SQL, in the same order of operations: start = greatest(full_at, now), after = start + $4
# (the emission interval), allowed when after - $5 (the lead) <= now.
_ALLOWED = f"greatest(b.full_at, {_NOW}) + $4 - $5 <= {_NOW}"
_SQL_TAKE = f"""
INSERT INTO rate_limit_buckets AS b (limit_name, key, full_at, admitted)
VALUES ($2, $3, {_NOW} + $4, true)
ON CONFLICT (limit_name, key) DO UPDATE SET
    full_at = CASE WHEN {_ALLOWED} THEN greatest(b.full_at, {_NOW}) + $4 ELSE b.full_at END,
    admitted = {_ALLOWED}
RETURNING full_at, admitted, {_NOW} AS now
"""  # noqa: S608 - constant fragments only
_SQL_PURGE = f"DELETE FROM rate_limit_buckets WHERE full_at <= {_NOW}"  # noqa: S608


class PostgresRateLimiter:
    """Build with :meth:`of_store` (or on any pool whose database is migrated)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        clock: Callable[[], float] | None = None,
        timeout: float = 1.0,
        purge_every: float = 60.0,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._timeout = timeout
        self._purge_every = purge_every
        self._purged_at = self._monotonic()
        # (limit, key digest, per_minute) -> (local time from which a token may be back, the latest it is back)
        self._refused: dict[tuple[str, bytes, float], tuple[float, float]] = {}

    @classmethod
    def of_store(cls, store: PostgresStore, **kwargs: Any) -> PostgresRateLimiter:
        """Buckets in the store's database, on the store's pool."""
        return cls(store._pool, **kwargs)  # noqa: SLF001 - one adapter package, one pool per process

    async def take(self, limit: str, key: str, per_minute: float) -> float | None:
        check_limit(limit)
        if check_per_minute(per_minute) == 0:
            return None
        digest = _key(key)
        bucket = (limit, digest, per_minute)
        sent = self._monotonic()
        if (refused := self._refused.get(bucket)) is not None:
            earliest, latest = refused
            if sent < earliest:
                return latest - sent
            del self._refused[bucket]
        interval, lead = window(per_minute)
        now = None if self._clock is None else self._clock()
        row = await self._fetchrow(
            f"taking a token of rate limit {limit}", _SQL_TAKE, now, limit, digest, interval, lead
        )
        assert row is not None  # INSERT … ON CONFLICT DO UPDATE always returns its row
        answered = self._monotonic()
        if answered - self._purged_at >= self._purge_every:
            await self._purge_quietly()
        if row["admitted"]:
            return None
        wait: float = row["full_at"] + interval - lead - row["now"]  # take_step's wait, same order
        self._remember(bucket, sent + wait, answered + wait)
        return wait

    def _remember(self, bucket: tuple[str, bytes, float], earliest: float, latest: float) -> None:
        if len(self._refused) >= _MAX_REFUSED:
            now = self._monotonic()
            self._refused = {b: times for b, times in self._refused.items() if times[0] > now}
            if len(self._refused) >= _MAX_REFUSED:
                self._refused.clear()
        self._refused[bucket] = (earliest, latest)

    async def purge(self) -> int:
        self._purged_at = self._monotonic()
        now = None if self._clock is None else self._clock()
        with _translated("purging full rate-limit buckets"):
            async with asyncio.timeout(self._timeout):
                status = await self._pool.execute(_SQL_PURGE, now)
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def _fetchrow(self, what: str, sql: str, *args: object) -> asyncpg.Record | None:
        with _translated(what):
            async with asyncio.timeout(self._timeout):
                return await self._pool.fetchrow(sql, *args)

    async def _purge_quietly(self) -> None:
        try:
            await self.purge()
        except ForgeError as exc:
            _log.warning("rate limits: %s (retried on a later take)", exc)

    def _monotonic(self) -> float:
        return time.monotonic() if self._clock is None else self._clock()


def _key(key: str) -> bytes:
    """Any key (a long subject, NUL, a lone surrogate from a JSON body) as 32 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """``translate_errors``, and any database error it leaves as it is (read-only after a failover, ...)
    as ``ServiceUnavailableError`` too: the buckets cannot answer now, whatever the reason."""
    try:
        with translate_errors(what):
            yield
    except asyncpg.PostgresError as exc:
        raise ServiceUnavailableError(f"{what}: PostgreSQL refused: {exc}", retry_after=1.0) from exc

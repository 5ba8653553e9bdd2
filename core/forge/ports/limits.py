"""RateLimiter: token buckets in a store every API replica shares, so a limit is global, not per process.

A bucket is named by a *limit* (``runs``, ``webhooks``, ...) and a *key* (a token subject, a
repository). ``per_minute`` tokens refill evenly (one every ``60 / per_minute`` s) and a bucket holds
at most ``capacity(per_minute)`` = ``max(1, per_minute)``: a quiet key may spend a minute's worth at
once. :meth:`RateLimiter.take` spends one token, or says how many seconds until one is back.
``per_minute == 0`` disables the limit (no bucket is touched).

A bucket is stored as one number, the time it is full again (``full_at``, seconds: the "theoretical
arrival time" of the generic cell rate algorithm, GCRA): with emission interval
``T = 60 / per_minute`` and ``window = capacity * T``, a take at ``now`` would move it to
``max(full_at, now) + T`` and is allowed when that is at most ``window`` ahead of ``now``. A bucket
with ``full_at <= now`` is full, the same as no bucket, so idle full buckets can be dropped
(:meth:`RateLimiter.purge`) without changing any answer. :func:`take_step` is that step, the one
definition the memory fake runs and the PostgreSQL adapter writes as SQL.

Each adapter reads its own clock (PostgreSQL's, for the shared store), never the callers': replicas
whose clocks disagree still share one timeline. Tests inject a clock into the adapter instead.

Error contract: the store unreachable, too slow (the adapter's timeout) or refusing → ``TransientError``
(``ServiceUnavailableError``); a limit name or rate that is not one → ``InvalidInputError``. The API
lets a request through when the store fails (``forge.api.auth.limits``).
"""

from __future__ import annotations

import math
from typing import Protocol

from forge.errors import InvalidInputError

__all__ = [
    "MAX_LIMIT_NAME",
    "TOLERANCE",
    "RateLimiter",
    "capacity",
    "check_limit",
    "check_per_minute",
    "retry_after",
    "take_step",
    "window",
]

MAX_LIMIT_NAME = 64
TOLERANCE = 1e-3
"""Seconds a take may come early and still be allowed: absorbs float rounding between adapters, and a
client that waits the whole seconds of :func:`retry_after` is never refused for a microsecond."""


class RateLimiter(Protocol):
    async def take(self, limit: str, key: str, per_minute: float) -> float | None:
        """Spend one token of bucket (``limit``, ``key``): ``None`` when one was there (or
        ``per_minute`` is 0), else the seconds until one is, the bucket unchanged. Atomic: concurrent
        takes from any number of processes never spend more tokens than the bucket holds."""
        ...

    async def purge(self) -> int:
        """Drop the buckets that are full (idle long enough to refill); how many were dropped.
        Adapters also purge on their own now and then; answers never change by it."""
        ...


def check_limit(limit: str) -> str:
    if not limit or len(limit) > MAX_LIMIT_NAME or not limit.isascii() or not limit.isprintable():
        raise InvalidInputError(f"rate limit name {limit[:80]!r} is not 1-{MAX_LIMIT_NAME} printable ASCII characters")
    return limit


def check_per_minute(per_minute: float, what: str = "per_minute") -> float:
    if isinstance(per_minute, bool) or not isinstance(per_minute, int | float) or not math.isfinite(per_minute):
        raise InvalidInputError(f"{what} must be a finite number of requests per minute, not {per_minute!r}")
    if per_minute < 0:
        raise InvalidInputError(f"{what} must be 0 (no limit) or more, not {per_minute!r}")
    return float(per_minute)


def capacity(per_minute: float) -> float:
    """The tokens a full bucket holds: a minute's worth, and at least one (else nothing would pass)."""
    return max(1.0, per_minute)


def window(per_minute: float) -> tuple[float, float]:
    """(emission interval ``T``, allowed lead ``capacity * T + TOLERANCE``) in seconds; ``per_minute > 0``."""
    interval = 60.0 / per_minute
    return interval, capacity(per_minute) * interval + TOLERANCE


def take_step(full_at: float | None, now: float, per_minute: float) -> tuple[float, float | None]:
    """One take on a bucket full at ``full_at`` (``None``: no bucket, i.e. full) at ``now``:
    (the bucket's new ``full_at``, ``None`` if allowed else the seconds to wait). ``per_minute > 0``.

    The PostgreSQL adapter computes the same expressions in the same order (float8 is IEEE double),
    so both adapters give bit-identical answers for the same clock readings.
    """
    interval, lead = window(per_minute)
    start = now if full_at is None else max(full_at, now)
    after = start + interval
    if after - lead <= now:
        return after, None
    return start, after - lead - now


def retry_after(wait: float) -> int:
    """``Retry-After``: the whole seconds of a wait, at least 1."""
    return max(1, math.ceil(wait))

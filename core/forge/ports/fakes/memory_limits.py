"""Rate-limit buckets in this process (the ``RateLimiter`` fake): for tests, and an API built without a database.

The same step as every adapter (``forge.ports.limits.take_step``) on a dict; a take never awaits,
so concurrent takes in one event loop are atomic. Only this process's requests count: with several
processes, each enforces the whole limit on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from forge.ports.limits import check_limit, check_per_minute, take_step

__all__ = ["MemoryRateLimiter"]

MAX_KEYS = 100_000
"""Buckets kept before full ones are dropped: a flood of made-up keys costs memory up to here."""


class MemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, *, max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[tuple[str, str], float] = {}  # (limit, key) -> full_at

    async def take(self, limit: str, key: str, per_minute: float) -> float | None:
        check_limit(limit)
        if check_per_minute(per_minute) == 0:
            return None
        now = self._clock()
        full_at, wait = take_step(self._buckets.get((limit, key)), now, per_minute)
        self._buckets[(limit, key)] = full_at
        if len(self._buckets) > self._max_keys:
            self._drop_full(now)
        return wait

    async def purge(self) -> int:
        return self._drop_full(self._clock())

    def _drop_full(self, now: float) -> int:
        full = [bucket for bucket, full_at in self._buckets.items() if full_at <= now]
        for bucket in full:
            del self._buckets[bucket]
        return len(full)

"""Test-side helpers of the rate-limit tests."""

from __future__ import annotations

from forge.adapters.postgres_store import PostgresStore


class Clock:
    """A clock the tests step (seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def migrated(dsn: str) -> None:
    store = await PostgresStore.connect(dsn, min_size=1, max_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()

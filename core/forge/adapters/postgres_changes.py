"""``ChangeFeed`` on PostgreSQL: one dedicated connection per process LISTENs on ``run_changes`` and wakes
the in-process listeners of each notified run (``forge.ports.changes.Fanout``).

The store NOTIFYs once per run and transaction, at commit (``0004_run_changes.sql``). The connection is
the feed's own, never one of the pool's: a LISTEN lives as long as its connection. When it drops, the
feed reconnects with capped backoff and then wakes every listener (notices sent while it was away are
lost; the changes are not, watchers read them from the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

import asyncpg

from forge.adapters._postgres_rows import translate_errors
from forge.ports.changes import Fanout, Wakeups

__all__ = ["CHANNEL", "PostgresChangeFeed"]

CHANNEL = "run_changes"
_log = logging.getLogger("forge.changes")


class PostgresChangeFeed:
    """Build with :meth:`open` (an async context manager); ``listen(run_id)`` in each watcher."""

    def __init__(self, dsn: str, *, retry_max: float = 5.0, connect_timeout: float = 10.0) -> None:
        self._dsn = dsn
        self._retry_max = retry_max
        self._connect_timeout = connect_timeout
        self._fanout = Fanout()
        self._conn: asyncpg.Connection[Any] | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.notices = 0
        """Notifications received (for tests and benchmarks)."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, dsn: str, **kwargs: Any) -> AsyncIterator[PostgresChangeFeed]:
        """Connect and LISTEN (``ServiceUnavailableError`` when PostgreSQL cannot be reached), then keep
        listening in the background until the context exits."""
        feed = cls(dsn, **kwargs)
        await feed._connect()
        feed._task = asyncio.create_task(feed._keep_listening(), name="forge-change-feed")
        try:
            yield feed
        finally:
            await feed.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def listen(self, *run_ids: UUID) -> AbstractAsyncContextManager[Wakeups]:
        return self._fanout.listen(*run_ids)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()
        self._fanout.wake_all()

    async def _connect(self) -> None:
        with translate_errors("listening for run changes"):
            conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            self._lost.clear()
            self._conn = conn
            try:
                conn.add_termination_listener(self._on_lost)
                await conn.add_listener(CHANNEL, self._on_notice)
            except BaseException:
                self._conn = None
                await conn.close()
                raise

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _keep_listening(self) -> None:
        delay = 0.1
        while True:
            await self._lost.wait()
            await self._disconnect()
            self._fanout.wake_all()  # listeners fall back to their timers until we are back
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except Exception as exc:  # noqa: BLE001 - any failure to reconnect is retried
                    delay = min(delay * 2, self._retry_max)
                    _log.warning("run change feed: reconnecting to PostgreSQL failed (%s); retrying", exc)
                    continue
                delay = 0.1
                _log.info("run change feed: listening again")
                self._fanout.wake_all()  # what was notified while we were away is in the table
                break

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.notices += 1
        try:
            run_id = UUID(str(payload))
        except ValueError:
            return
        self._fanout.notify(run_id)

    def _on_lost(self, conn: object) -> None:
        if conn is self._conn:  # not one the feed closed itself
            _log.warning("run change feed: the LISTEN connection was lost")
            self._lost.set()

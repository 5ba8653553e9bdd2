"""The ``*_json`` reads of ``PostgresStore``: the bytes of recent documents, so an unchanged document is not
built again, and reads of one document coalesced.

A read holding a document first asks for the current version alone (``SQL_RUN_VERSION``: the run row's
``xmin``; ``SQL_EXECUTIONS_VERSION``: the run's head, one primary-key probe) and answers with the held
bytes when it is theirs: one small statement, whose plan is a few nodes (the document statements' plans
have a hundred, and PostgreSQL initialises every node of a plan on each execution, run or not). When
the version moved, or nothing is held, the document statement builds the body and its version from one
snapshot. A finished run read a thousand times is formatted once per API process. The version changes
whenever a write of the store changes a byte of the body (the ``JsonDocument`` contract), so a hit is
never stale: the answer is as fresh as the statement that checked it, and that statement was sent
after the read arrived (``DocumentReads``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import asyncpg

from forge.ports.store import JsonDocument

__all__ = ["DocumentCache", "DocumentReads"]


class DocumentReads:
    """The ``*_json`` reads of one pool: held bytes (``DocumentCache``) checked by version, and reads of
    one document coalesced.

    Reads of a document (one key: what was asked, the same arguments) that arrive while a statement for
    it runs wait for the next one and share it: one statement per key at a time, however many ask. Each
    read is still answered by a statement sent after it arrived, so it is as fresh as if it had sent its
    own; 32 readers of one run cost the database about two statements per round trip instead of 32, and
    none of them waits in the pool's queue behind the others.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._pool = pool
        self._cache = DocumentCache(max_bytes)
        self._next: dict[Hashable, asyncio.Future[JsonDocument | None]] = {}
        """Per key, the readers waiting for a statement not sent yet."""
        self._drains: dict[Hashable, asyncio.Task[None]] = {}

    async def read(self, key: Hashable, version_sql: str, document_sql: str, *args: Any) -> JsonDocument | None:
        """The document ``document_sql`` answers for ``args`` (``$1..$n``; ``$n+1`` is the version held,
        whose body it leaves NULL), or None when ``args[0]`` names nothing. A held document is checked
        first with ``version_sql`` (``$1`` = ``args[0]``) and returned while its version is current."""
        batch = self._next.get(key)
        if batch is None:
            batch = self._next[key] = asyncio.get_running_loop().create_future()
            batch.add_done_callback(_retrieved)
            if key not in self._drains:
                self._drains[key] = asyncio.create_task(self._drain(key, version_sql, document_sql, args))
        return await asyncio.shield(batch)

    async def _drain(self, key: Hashable, version_sql: str, document_sql: str, args: tuple[Any, ...]) -> None:
        """Answer the waiting readers of ``key``, one statement (or two: version, then document) at a
        time, until none waits. A batch is closed before its statement is sent."""
        try:
            while (batch := self._next.pop(key, None)) is not None:
                try:
                    found = await self._read(key, version_sql, document_sql, args)
                except Exception as exc:  # noqa: BLE001 - every reader of the batch gets it, whatever it is
                    batch.set_exception(exc)
                except BaseException:
                    batch.cancel()
                    raise
                else:
                    batch.set_result(found)
        finally:
            del self._drains[key]
            waiting = self._next.pop(key, None)
            if waiting is not None:  # only when cancelled: no reader is left waiting
                waiting.cancel()

    async def _read(
        self, key: Hashable, version_sql: str, document_sql: str, args: tuple[Any, ...]
    ) -> JsonDocument | None:
        held = self._cache.get(key)
        if held is not None:
            current = await self._pool.fetchrow(version_sql, args[0])
            if current is None:
                return None
            if current["version"] == held.version:
                return held
        row = await self._pool.fetchrow(document_sql, *args, None if held is None else held.version)
        if row is None:
            return None
        if row["body"] is None and held is not None:
            return held
        document = JsonDocument(row["body"], row["version"], int(row.get("total", 1)))
        self._cache.put(key, document)
        return document


def _retrieved(batch: asyncio.Future[Any]) -> None:
    """Mark an exception as seen: every reader of a batch may have gone (cancelled) before it came."""
    if not batch.cancelled():
        batch.exception()


class DocumentCache:
    """Least recently used documents by what was asked, at most ``max_bytes`` of bodies in all."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max = max_bytes
        self._size = 0
        self._entries: OrderedDict[Hashable, JsonDocument] = OrderedDict()

    def get(self, key: Hashable) -> JsonDocument | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: Hashable, document: JsonDocument) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= len(old.body)
        if len(document.body) > self._max:
            return
        self._entries[key] = document
        self._size += len(document.body)
        while self._size > self._max:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted.body)

"""The bytes of recent ``*_json`` reads of ``PostgresStore``, so an unchanged document is not built again.

A read holding a document first asks for the current version alone (``SQL_RUN_VERSION``: the run row's
``xmin``; ``SQL_EXECUTIONS_VERSION``: the run's head, one primary-key probe) and answers with the held
bytes when it is theirs: one small statement, whose plan is a few nodes (the document statements' plans
have a hundred, and PostgreSQL initialises every node of a plan on each execution, run or not). When
the version moved, or nothing is held, the document statement builds the body and its version from one
snapshot. A finished run read a thousand times is formatted once per API process. The version changes
whenever a byte of the body would (the ``JsonDocument`` contract), so a hit is never stale: the answer
is as fresh as the statement that checked it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import asyncpg

from forge.ports.store import JsonDocument

__all__ = ["DocumentCache", "read_document"]


async def read_document(
    pool: asyncpg.Pool[asyncpg.Record],
    cache: DocumentCache,
    key: Hashable,
    version_sql: str,
    document_sql: str,
    *args: Any,
) -> JsonDocument | None:
    """The document ``document_sql`` answers for ``args`` (``$1..$n``; ``$n+1`` is the version held, whose
    body it leaves NULL), or None when ``args[0]`` names nothing. A held document is checked first with
    ``version_sql`` (``$1`` = ``args[0]``) and returned while its version is current."""
    held = cache.get(key)
    if held is not None:
        current = await pool.fetchrow(version_sql, args[0])
        if current is None:
            return None
        if current["version"] == held.version:
            return held
    row = await pool.fetchrow(document_sql, *args, None if held is None else held.version)
    if row is None:
        return None
    if row["body"] is None and held is not None:
        return held
    document = JsonDocument(row["body"], row["version"], int(row.get("total", 1)))
    cache.put(key, document)
    return document


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

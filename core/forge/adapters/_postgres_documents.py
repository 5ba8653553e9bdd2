"""The bytes of recent ``*_json`` reads of ``PostgresStore``, so an unchanged document is not built again.

A read sends the version of the bytes it holds; PostgreSQL computes the current version (cheap: the
rows' ``xmin``) and builds the body only when it differs (``SQL_RUN_JSON``, ``SQL_EXECUTIONS_JSON``).
A finished run read a thousand times is formatted once per API process. The version changes
whenever a byte of the body would (the ``JsonDocument`` contract), so a hit is never stale: the
answer is as fresh as the statement that checked it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from forge.ports.store import JsonDocument

__all__ = ["DocumentCache"]


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

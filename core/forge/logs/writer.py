"""Stream a step's output to object storage in chunks while it runs."""

from __future__ import annotations

import asyncio
import time

from forge.logs.reader import parts_prefix
from forge.ports import ObjectStore

__all__ = ["LogWriter"]


class LogWriter:
    """Buffer output; upload a chunk every ``interval`` seconds or ``chunk_bytes``; ``close`` finalises.

    Not safe for concurrent ``write`` calls from several tasks without the caller's ordering.
    """

    def __init__(self, objects: ObjectStore, key: str, *, interval: float = 1.0, chunk_bytes: int = 256 * 1024):
        self.objects = objects
        self.key = key
        self.interval = interval
        self.chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self._all = bytearray()
        self._seq = 0
        self._last_flush = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        return len(self._all) + len(self._buffer)

    async def write(self, data: bytes) -> None:
        self._buffer.extend(data)
        if len(self._buffer) >= self.chunk_bytes or time.monotonic() - self._last_flush >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._last_flush = time.monotonic()
            if not self._buffer:
                return
            chunk, self._buffer = bytes(self._buffer), bytearray()
            await self.objects.put(f"{parts_prefix(self.key)}{self._seq:010d}", chunk, content_type="text/plain")
            self._seq += 1
            self._all.extend(chunk)

    async def close(self) -> None:
        """Write the whole log to its key, then drop the chunks."""
        await self.flush()
        async with self._lock:
            await self.objects.put(self.key, bytes(self._all), content_type="text/plain; charset=utf-8")
            for info in await self.objects.list(parts_prefix(self.key)):
                await self.objects.delete(info.key)

"""Stream a step's output to object storage in chunks while it runs.

A log costs as few object writes as its step allows: a step that ends before the first flush
(``interval`` seconds, or ``chunk_bytes`` of output) is one PUT of the whole log and nothing
else. Chunks (``<key>.parts/<seq>``) exist only once a flush has written one; ``close`` writes
the whole log and deletes exactly the chunks this writer wrote (by key: no listing). Chunks an
earlier, killed writer left behind are the caller's to discard before it starts.

A writer with a ``limit`` keeps at most that many bytes: the write that crosses it is cut there and
followed by one ``forge:`` marker line; later writes are dropped (``full``), and the step keeps
running. The writer holds the log it wrote (it writes the whole log at ``close``), so ``limit``
bounds its memory too.
"""

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

    def __init__(
        self,
        objects: ObjectStore,
        key: str,
        *,
        interval: float = 1.0,
        chunk_bytes: int = 256 * 1024,
        limit: int | None = None,
    ):
        self.objects = objects
        self.key = key
        self.interval = interval
        self.chunk_bytes = chunk_bytes
        self.limit = limit
        self.dropped = 0  # bytes refused past the limit
        self._capped = False
        self._buffer = bytearray()
        self._all = bytearray()
        self._seq = 0
        self._last_flush = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        return len(self._all) + len(self._buffer)

    @property
    def parts(self) -> int:
        """How many chunks this writer has uploaded so far."""
        return self._seq

    @property
    def full(self) -> bool:
        """Whether the limit was reached: every further write is dropped."""
        return self._capped

    async def write(self, data: bytes) -> None:
        if self._capped:
            self.dropped += len(data)
            return
        if self.limit is not None and self.size + len(data) > self.limit:
            room = max(0, self.limit - self.size)
            self.dropped += len(data) - room
            data = data[:room] + _marker(self.limit)
            self._capped = True
        self._buffer.extend(data)
        if len(self._buffer) >= self.chunk_bytes or time.monotonic() - self._last_flush >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._last_flush = time.monotonic()
            if not self._buffer:
                return
            chunk = bytes(self._buffer)
            await self.objects.put(self._part(self._seq), chunk, content_type="text/plain")
            del self._buffer[: len(chunk)]  # only once uploaded: a failed flush keeps it for the next
            self._seq += 1
            self._all.extend(chunk)

    async def close(self) -> None:
        """Write the whole log to its key (the buffer need not become a chunk first), then drop the chunks."""
        async with self._lock:
            self._all += self._buffer  # one copy of the log at a time, besides the bytes put below
            self._buffer = bytearray()
            await self.objects.put(self.key, bytes(self._all), content_type="text/plain; charset=utf-8")
            for seq in range(self._seq):
                await self.objects.delete(self._part(seq))

    def _part(self, seq: int) -> str:
        return f"{parts_prefix(self.key)}{seq:010d}"


def _marker(limit: int) -> bytes:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    return f"\nforge: the log reached its limit of {size}; further output of this step is dropped\n".encode()

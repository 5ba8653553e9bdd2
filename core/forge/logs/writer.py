"""Stream a step's output to object storage in chunks while it runs, and the whole log at its end.

A log costs as few object writes as its step allows: a step that ends before the first flush
(``interval`` seconds, or ``chunk_bytes`` of output) is one PUT of the whole log and nothing
else. Chunks (``<key>.parts/<seq>``) exist only once a flush has written one; ``close`` writes
the whole log and deletes exactly the chunks this writer wrote (by key: no listing). Chunks an
earlier, killed writer left behind are the caller's to discard before it starts.

The writer never holds the log in memory: each uploaded chunk is appended to a spool file (a
private temporary file, created at the first chunk), and ``close`` uploads the whole log from it
with ``ObjectStore.put_file`` (streamed, a part at a time). Memory is the unflushed buffer (about
``chunk_bytes``) plus the upload's part, whatever the log's size. A retried step's log starts with
the complete log of its earlier attempts: ``start_from`` streams it into the spool (never into
memory) and the first flush uploads it as the first chunk, so a reader sees it while the new
attempt runs.

A writer that takes a log over (a retried attempt, or a redelivery after its worker died) writes the
next chunk *generation* (``forge.logs.reader``): ``take_over`` streams the most recent stored state of
the log into the spool, adds a boundary marker, uploads it at once as the writer's first chunk and only
then deletes what it replaces, so the log is never lost nor seen shorter. ``checkpoint`` returns what
``seal`` needs to complete the log if this writer never closes it (its worker dies after its step
settled): the generation, the chunks uploaded so far and the unflushed tail.

A writer with a ``limit`` keeps at most that many bytes of what is ``write``-n to it (what
``start_from`` took does not count): the write that crosses it is cut there and followed by one
``forge:`` marker line; later writes are dropped (``full``), and the step keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge.errors import NotFoundError
from forge.logs.reader import StoredLog, part_key, parts_prefix
from forge.ports import ObjectInfo, ObjectStore

__all__ = ["LogCheckpoint", "LogWriter", "seal"]

_CONTENT_TYPE = "text/plain; charset=utf-8"


class LogWriter:
    """Buffer output; upload a chunk every ``interval`` seconds or ``chunk_bytes``; ``close`` finalises.

    Not safe for concurrent ``write`` calls from several tasks without the caller's ordering. A writer
    that is not closed (its step was cancelled) must be ``release``-d, which removes its spool file.
    """

    def __init__(
        self,
        objects: ObjectStore,
        key: str,
        *,
        interval: float = 1.0,
        chunk_bytes: int = 256 * 1024,
        limit: int | None = None,
        spool_dir: Path | None = None,
        generation: int = 0,
    ):
        self.objects = objects
        self.key = key
        self.generation = generation
        self.interval = interval
        self.chunk_bytes = chunk_bytes
        self.limit = limit
        self.spool_dir = spool_dir
        self.dropped = 0  # bytes refused past the limit
        self._capped = False
        self._buffer = bytearray()
        self._written = 0  # bytes accepted by write (the limit's count)
        self._spool: Path | None = None
        self._spooled = 0  # bytes in the spool file
        self._unpublished = 0  # bytes of the spool (from start_from) no chunk holds yet
        self._seq = 0
        self._last_flush = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        """Bytes of the log so far (earlier attempts included)."""
        return self._spooled + len(self._buffer)

    @property
    def parts(self) -> int:
        """How many chunks this writer has uploaded so far."""
        return self._seq

    @property
    def full(self) -> bool:
        """Whether the limit was reached: every further write is dropped."""
        return self._capped

    async def start_from(self, key: str) -> int:
        """Begin the log with the complete log stored at ``key`` (a retried step's earlier attempts), streamed
        into the spool; its size (0 when there is none). Call it before any ``write``."""
        async with self._lock:
            assert self._spooled == 0, "start_from comes before any write"
            assert not self._buffer, "start_from comes before any write"
            spool = await self._spool_file()
            try:
                info = await self.objects.get_file(key, spool)
            except NotFoundError:
                await self._remove_spool()
                return 0
            self._spooled = self._unpublished = info.size
            return info.size

    async def take_over(self, stored: StoredLog, *, marker: bytes = b"") -> int:
        """Begin the log with the most recent state of ``stored`` (``StoredLog.newest``) and then ``marker``
        (when anything was stored), upload that now as this writer's first chunk, then delete the whole log
        and every chunk ``stored`` listed. Bytes taken over (0: nothing was stored). Call it before any
        ``write``, on a writer of ``stored.next_generation``."""
        assert self.generation >= stored.next_generation, "a take-over writes a newer generation"
        newest = stored.newest()
        if newest is None:
            return 0
        async with self._lock:
            assert self._spooled == 0, "take_over comes before any write"
            assert not self._buffer, "take_over comes before any write"
            spool = await self._spool_file()
            sources = [newest] if isinstance(newest, ObjectInfo) else newest
            try:
                await _download(self.objects, [info.key for info in sources], spool)
            except NotFoundError:  # replaced while read (another writer is at work): start empty
                await self._remove_spool()
                return 0
            size = spool.stat().st_size
            if marker:
                ends_line = size == 0 or await asyncio.to_thread(_last_byte, spool) == b"\n"
                await asyncio.to_thread(_append_to, spool, marker if ends_line else b"\n" + marker)
            self._spooled = self._unpublished = spool.stat().st_size
        await self.flush()  # the first chunk, before anything it replaces is deleted
        if stored.whole is not None:
            await self.objects.delete(stored.key)
        for info in stored.parts:
            await self.objects.delete(info.key)
        return size

    async def checkpoint(self, *, inline: int = 64 * 1024) -> LogCheckpoint:
        """What ``seal`` needs to complete this log as it is now: everything but a tail of at most ``inline``
        bytes is uploaded (a longer tail becomes a chunk first); the tail travels in the checkpoint."""
        if self._unpublished or len(self._buffer) > inline:
            await self.flush()
        async with self._lock:
            return LogCheckpoint(generation=self.generation, parts=self._seq, tail=bytes(self._buffer))

    async def write(self, data: bytes) -> None:
        if self._capped:
            self.dropped += len(data)
            return
        if self.limit is not None and self._written + len(data) > self.limit:
            room = max(0, self.limit - self._written)
            self.dropped += len(data) - room
            data = data[:room] + _marker(self.limit)
            self._capped = True
        self._written += len(data)
        self._buffer.extend(data)
        if len(self._buffer) >= self.chunk_bytes or time.monotonic() - self._last_flush >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._last_flush = time.monotonic()
            if self._unpublished:  # the earlier attempts' log becomes the first chunk, from the spool
                assert self._spool is not None
                await self.objects.put_file(self._part(self._seq), self._spool, content_type="text/plain")
                self._seq += 1
                self._unpublished = 0
            if not self._buffer:
                return
            chunk = bytes(self._buffer)
            await self.objects.put(self._part(self._seq), chunk, content_type="text/plain")
            del self._buffer[: len(chunk)]  # only once uploaded: a failed flush keeps it for the next
            self._seq += 1
            await self._append(chunk)

    async def close(self) -> None:
        """Write the whole log to its key from the spool (the buffer need not become a chunk first), then drop
        the chunks and the spool file."""
        async with self._lock:
            try:
                if self._spool is None and self._seq == 0:  # a short log: one PUT from memory, no file
                    await self.objects.put(self.key, bytes(self._buffer), content_type=_CONTENT_TYPE)
                else:
                    await self._append(bytes(self._buffer))
                    assert self._spool is not None
                    await self.objects.put_file(self.key, self._spool, content_type=_CONTENT_TYPE)
                self._buffer = bytearray()
                for seq in range(self._seq):
                    await self.objects.delete(self._part(seq))
            finally:
                await self._remove_spool()

    async def release(self) -> None:
        """Remove the spool file of a writer that will not be closed (nothing is uploaded)."""
        await self._remove_spool()

    async def _spool_file(self) -> Path:
        if self._spool is None:
            fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="forge-log-", dir=self.spool_dir)
            os.close(fd)
            self._spool = Path(name)
        return self._spool

    async def _append(self, data: bytes) -> None:
        spool = await self._spool_file()
        if data:
            await asyncio.to_thread(_append_to, spool, data)
            self._spooled += len(data)

    async def _remove_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(spool.unlink)

    def _part(self, seq: int) -> str:
        return part_key(self.key, self.generation, seq)


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """A log as its writer left it: chunks ``0..parts-1`` of ``generation`` uploaded, then ``tail``."""

    generation: int
    parts: int
    tail: bytes

    def as_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "parts": self.parts, "tail": base64.b64encode(self.tail).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogCheckpoint:
        return cls(int(data["generation"]), int(data["parts"]), base64.b64decode(data["tail"]))


async def seal(objects: ObjectStore, key: str, checkpoint: LogCheckpoint, *, spool_dir: Path | None = None) -> None:
    """Complete a log whose writer stopped after ``checkpoint`` (its worker died): a whole log written since
    (its own ``close``) is kept, else the checkpoint's chunks and tail become the whole log; every chunk
    under the log is deleted then. Idempotent."""
    try:
        await objects.stat(key)
    except NotFoundError:
        chunks = [part_key(key, checkpoint.generation, seq) for seq in range(checkpoint.parts)]
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="forge-log-", dir=spool_dir)
        os.close(fd)
        spool = Path(name)
        try:
            await _download(objects, chunks, spool)
            await asyncio.to_thread(_append_to, spool, checkpoint.tail)
            await objects.put_file(key, spool, content_type=_CONTENT_TYPE)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(spool.unlink)
    for info in await objects.list(parts_prefix(key)):
        await objects.delete(info.key)


async def _download(objects: ObjectStore, keys: list[str], spool: Path) -> None:
    """Concatenate the objects at ``keys`` into ``spool`` (truncated first), streamed a file at a time."""
    await asyncio.to_thread(spool.write_bytes, b"")
    if len(keys) == 1:
        await objects.get_file(keys[0], spool)
        return
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="forge-part-", dir=spool.parent)
    os.close(fd)
    part = Path(name)
    try:
        for key in keys:
            await objects.get_file(key, part)
            await asyncio.to_thread(_append_file, spool, part)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(part.unlink)


def _append_to(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def _append_file(path: Path, source: Path) -> None:
    with path.open("ab") as out, source.open("rb") as data:
        shutil.copyfileobj(data, out)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as data:
        data.seek(-1, os.SEEK_END)
        return data.read(1)


def _marker(limit: int) -> bytes:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    return f"\nforge: the log reached its limit of {size}; further output of this step is dropped\n".encode()

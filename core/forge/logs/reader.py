"""Read a step log, complete or in progress.

A short step's log appears complete in one write, with no chunks before it; a long one shows
chunks first. A writer killed mid-step leaves chunks and never the whole log: readers see it
as incomplete (``follow`` ends after its idle timeout) until the step's next writer takes it over.

Chunks belong to a *generation*: the first writer of a log writes generation 0
(``<key>.parts/<seq:010d>``); a writer that takes a log over (a retried attempt, or the redelivery
of a job whose worker died) writes the next one (``<key>.parts/g<gen:04d>-<seq:010d>``), whose
first chunk is everything stored before it. A reader takes the newest generation's chunks, so
what it sees only ever grows: every state of the store is a prefix of the final log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from forge.errors import NotFoundError
from forge.ports import ObjectInfo, ObjectStore

__all__ = ["LogReader", "StoredLog", "log_key", "newest_chunks", "part_key", "parts_prefix"]

_READ_TRIES = 5  # a read that keeps racing a writer (chunks replaced while read) gives up after this many


def log_key(run_id: object, phase: str, project: str, step: str) -> str:
    return f"pipeline-runs/{run_id}/logs/{phase}/{project}/{step}.log"


def parts_prefix(key: str) -> str:
    return f"{key}.parts/"


def part_key(key: str, generation: int, seq: int) -> str:
    """The key of chunk ``seq`` of ``generation`` (generation 0 keeps the plain ``<seq:010d>`` name)."""
    name = f"{seq:010d}" if generation == 0 else f"g{generation:04d}-{seq:010d}"
    return f"{parts_prefix(key)}{name}"


def _order(info: ObjectInfo) -> tuple[int, int] | None:
    """(generation, seq) of a chunk; ``None`` for a name that is not a chunk's."""
    name = info.key.rpartition("/")[2]
    try:
        if name.startswith("g"):
            generation, _, seq = name[1:].partition("-")
            return int(generation), int(seq)
        return 0, int(name)
    except ValueError:
        return None


def newest_chunks(parts: list[ObjectInfo]) -> list[ObjectInfo]:
    """The newest generation's chunks from seq 0 on, in order (stopping at a gap); empty when its first chunk
    is gone (its writer is deleting them, having completed the log)."""
    ordered = sorted((order, info) for info in parts if (order := _order(info)) is not None)
    if not ordered:
        return []
    newest = ordered[-1][0][0]
    chunks: list[ObjectInfo] = []
    for (generation, seq), info in ordered:
        if generation == newest:
            if seq != len(chunks):
                break
            chunks.append(info)
    return chunks


@dataclass(frozen=True, slots=True)
class StoredLog:
    """What the store holds of a log before a writer takes it over."""

    key: str
    whole: ObjectInfo | None
    """The complete log, when one exists."""
    parts: list[ObjectInfo] = field(default_factory=list)
    """Every chunk under the log's prefix, of any generation."""

    @classmethod
    async def look(cls, objects: ObjectStore, key: str) -> StoredLog:
        parts = await objects.list(parts_prefix(key))
        try:
            whole: ObjectInfo | None = await objects.stat(key)
        except NotFoundError:
            whole = None
        return cls(key, whole, parts)

    @property
    def next_generation(self) -> int:
        return max((order[0] + 1 for info in self.parts if (order := _order(info)) is not None), default=0)

    def newest(self) -> ObjectInfo | list[ObjectInfo] | None:
        """The most recent state of the log: the whole log or the newest chunks, whichever is longer (the
        other is a prefix of it: a writer uploads its first chunk before it deletes the whole log it took
        over, and writes the whole log before it deletes its chunks); ``None`` when nothing is stored."""
        chunks = newest_chunks(self.parts)
        if self.whole is not None and self.whole.size >= sum(c.size for c in chunks):
            return self.whole
        return chunks or None


@dataclass(frozen=True, slots=True)
class LogReader:
    objects: ObjectStore

    async def complete(self, key: str) -> bool:
        try:
            await self.objects.stat(key)
        except NotFoundError:
            return False
        return True

    async def read(self, key: str) -> tuple[bytes, bool]:
        """The log so far and whether it is complete; empty and incomplete when nothing is written yet."""
        for _ in range(_READ_TRIES):
            try:
                return await self.objects.get(key), True
            except NotFoundError:
                pass
            chunks = newest_chunks(await self.objects.list(parts_prefix(key)))
            if not chunks:  # nothing yet, or a short step's one write (or a close) landed since the first look
                try:
                    return await self.objects.get(key), True
                except NotFoundError:
                    return b"", False
            try:
                return b"".join([await self.objects.get(info.key) for info in chunks]), False
            except NotFoundError:  # the writer finished, or a newer one took over, meanwhile: look again
                continue
        return b"", False

    async def follow(
        self,
        key: str,
        *,
        poll: float = 0.5,
        idle_timeout: float = 3600,
        settled: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield new bytes as they arrive until the log is complete (or nothing changed for ``idle_timeout``).

        A retried step completes its log once per attempt, and each attempt's log starts with the complete
        log of the attempts before it (then its own ``forge: ... attempt N of M`` header: the boundary). A
        job redelivered after its worker died takes the dead worker's partial log over the same way, after a
        ``forge:`` line saying so. With ``settled`` (whether the step is final: no attempt follows), a
        complete log ends the follow only once the step is settled; until then the next attempt's log is
        followed on from where this one ended, so each attempt is shown once and what was yielded equals
        the final log. The final log is written before the step's final status, so the log read after
        ``settled`` said so is the last one."""
        sent = 0
        idle = 0.0
        while True:
            data, done = await self.read(key)
            if done and settled is not None and await settled():
                data, done = await self.read(key)  # written before the step settled: the final log
            elif done and settled is not None:
                done = False  # an attempt ended; another follows
            if len(data) > sent:
                yield data[sent:]
                sent, idle = len(data), 0.0
            if done:
                return
            if idle >= idle_timeout:
                return
            await asyncio.sleep(poll)
            idle += poll

"""Read a step log, complete or in progress.

A short step's log appears complete in one write, with no chunks before it; a long one shows
chunks first. A writer killed mid-step leaves chunks and never the whole log: readers see it
as incomplete (``follow`` ends after its idle timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from forge.errors import NotFoundError
from forge.ports import ObjectStore

__all__ = ["LogReader", "log_key", "parts_prefix"]


def log_key(run_id: object, phase: str, project: str, step: str) -> str:
    return f"pipeline-runs/{run_id}/logs/{phase}/{project}/{step}.log"


def parts_prefix(key: str) -> str:
    return f"{key}.parts/"


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
        try:
            return await self.objects.get(key), True
        except NotFoundError:
            pass
        parts = await self.objects.list(parts_prefix(key))
        if not parts:  # nothing yet, or a short step's one write landed since the first look
            try:
                return await self.objects.get(key), True
            except NotFoundError:
                return b"", False
        chunks = []
        for info in parts:
            try:
                chunks.append(await self.objects.get(info.key))
            except NotFoundError:  # the writer finished meanwhile: the whole log exists now
                return await self.objects.get(key), True
        return b"".join(chunks), False

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
        log of the attempts before it (then its own ``forge: ... attempt N of M`` header: the boundary). With
        ``settled`` (whether the step is final: no attempt follows), a complete log ends the follow only once
        the step is settled; until then the next attempt's log is followed on from where this one ended, so
        each attempt is shown once and what was yielded equals the final log. The final log is written before
        the step's final status, so the log read after ``settled`` said so is the last one."""
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

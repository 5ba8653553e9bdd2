"""One task per run inside a reconciler's TaskGroup: never two for a run, all cancelled on stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Coroutine
from typing import Any
from uuid import UUID

__all__ = ["RunTasks", "idle"]


class RunTasks:
    def __init__(self, group: asyncio.TaskGroup):
        self._group = group
        self._active: dict[UUID, asyncio.Task[None]] = {}

    def start(self, run_id: UUID, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``run_id`` unless a task for that run is already running."""
        if run_id in self._active:
            work.close()
            return
        task = self._group.create_task(work)
        self._active[run_id] = task
        task.add_done_callback(functools.partial(self._forget, run_id))

    def active(self, run_id: UUID) -> bool:
        return run_id in self._active

    async def cancel(self, run_id: UUID) -> None:
        """Cancel the run's task, if any, and wait until it has ended."""
        task = self._active.pop(run_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel_all(self) -> None:
        for task in self._active.values():
            task.cancel()

    def _forget(self, run_id: UUID, task: asyncio.Task[None]) -> None:
        if self._active.get(run_id) is task:  # not a newer task started for the run meanwhile
            del self._active[run_id]


async def idle(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

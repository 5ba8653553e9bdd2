"""``ChangeFeed`` of a ``MemoryStore``: wakes listeners of a run when a write of that run returns."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from uuid import UUID

from forge.ports.changes import Fanout, Wakeups
from forge.ports.fakes.memory_store import MemoryStore

__all__ = ["MemoryChangeFeed"]


class MemoryChangeFeed:
    """Listens to every connection of ``store``'s database (as LISTEN does); ``close()`` stops."""

    def __init__(self, store: MemoryStore) -> None:
        self._fanout = Fanout()
        self._listeners = store.testing_change_listeners()
        self._listeners.append(self._fanout.notify)

    def listen(self, *run_ids: UUID) -> AbstractAsyncContextManager[Wakeups]:
        return self._fanout.listen(*run_ids)

    def lose_notices(self) -> None:
        """What a dropped LISTEN connection does once it is back: every listener is woken."""
        self._fanout.wake_all()

    async def close(self) -> None:
        if self._fanout.notify in self._listeners:
            self._listeners.remove(self._fanout.notify)
        self._fanout.wake_all()

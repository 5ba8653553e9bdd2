"""Core NATS of the in-memory bus: subject interest, queued messages, the ``Subscription`` handed out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from forge.errors import ServiceUnavailableError

__all__ = ["CoreMsg", "CoreSub", "MemorySubscription"]


@dataclass(frozen=True)
class CoreMsg:
    subject: str
    data: bytes
    reply: str | None


class CoreSub:
    """Interest of one connection in a subject pattern; messages queue until read."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.closed = False
        self._queue: asyncio.Queue[CoreMsg | None] = asyncio.Queue()

    def put(self, msg: CoreMsg) -> None:
        if not self.closed:
            self._queue.put_nowait(msg)

    def close(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)  # wakes a reader blocked in get()

    async def get(self, timeout: float | None) -> CoreMsg | None:
        """The next message; None once closed; ``TimeoutError`` when none came in time."""
        if self.closed:
            return None
        async with asyncio.timeout(timeout):
            msg = await self._queue.get()
        return None if self.closed else msg


class MemorySubscription:
    """A core subscription, satisfying ``Subscription``; iteration ends when the bus closes."""

    def __init__(self, sub: CoreSub) -> None:
        self._sub = sub

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> bytes:
        msg = await self._sub.get(None)
        if msg is None:
            raise StopAsyncIteration
        return msg.data

    async def next(self, timeout: float) -> bytes:
        return (await self.testing_next_with_reply(timeout))[0]

    async def testing_next_with_reply(self, timeout: float | None) -> tuple[bytes, str | None]:
        """Test hook, not part of the port: the next payload with its reply subject (a request's inbox)."""
        what = f"receive on {self._sub.pattern}"
        try:
            msg = await self._sub.get(timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"NATS {what} timed out") from exc
        if msg is None:
            raise ServiceUnavailableError(f"NATS is unavailable ({what}): nats: connection closed")
        return msg.data, msg.reply

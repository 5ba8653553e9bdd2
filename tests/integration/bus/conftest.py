"""The adapters the MessageBus compliance suite runs against.

To add an adapter, write a ``BusHarness`` for it and list its factory in ``HARNESSES``: the tests
only ever see ``MessageBus`` plus the few test-side helpers a harness provides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import nats
import pytest
from nats.aio.msg import Msg

from forge.adapters.nats_bus import NatsBus
from forge.embedded.process import ServiceProcess, free_port
from forge.ports.bus import MessageBus
from forge.ports.fakes import MemoryServer, MemorySubscription


class BusHarness(Protocol):
    async def open(self) -> MessageBus:
        """A bus connected to the test server."""

    async def open_unreachable(self) -> MessageBus:
        """Connect to an address where nothing listens (expected to raise)."""

    async def reset(self) -> None:
        """Delete every stream, so the next test starts clean."""

    def responder(self, subject: str, answer: Callable[[bytes], bytes]) -> AbstractAsyncContextManager[None]:
        """Answer core requests on ``subject`` (the port has no way to learn a request's reply inbox)."""


class NatsHarness:
    def __init__(self, server: ServiceProcess) -> None:
        self._url = server.url

    async def open(self) -> MessageBus:
        return await NatsBus.connect(self._url)

    async def open_unreachable(self) -> MessageBus:
        return await NatsBus.connect(f"nats://127.0.0.1:{free_port()}", connect_timeout=1.0)

    async def reset(self) -> None:
        nc = await nats.connect(self._url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name:
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    @contextlib.asynccontextmanager
    async def responder(self, subject: str, answer: Callable[[bytes], bytes]) -> AsyncIterator[None]:
        nc = await nats.connect(self._url)

        async def handle(msg: Msg) -> None:
            await msg.respond(answer(msg.data))

        try:
            await nc.subscribe(subject, cb=handle)
            # nats-py's flush() PING overtakes the still-buffered SUB; the second one is behind it.
            await nc.flush()
            await nc.flush()
            yield
        finally:
            await nc.close()


class MemoryHarness:
    """The in-memory fake; a stopped ``MemoryServer`` stands for an address where nothing listens."""

    def __init__(self) -> None:
        self._server = MemoryServer()

    async def open(self) -> MessageBus:
        return self._server.connect()

    async def open_unreachable(self) -> MessageBus:
        nobody = MemoryServer("unreachable")
        nobody.stop()
        return nobody.connect()

    async def reset(self) -> None:
        self._server.reset()

    @contextlib.asynccontextmanager
    async def responder(self, subject: str, answer: Callable[[bytes], bytes]) -> AsyncIterator[None]:
        bus = self._server.connect()

        async def serve(sub: MemorySubscription) -> None:
            while True:
                data, reply = await sub.testing_next_with_reply(timeout=None)
                if reply is not None:
                    await bus.respond(reply, answer(data))

        try:
            async with bus.subscribe(subject) as sub, asyncio.TaskGroup() as tasks:
                serving = tasks.create_task(serve(sub))
                try:
                    yield
                finally:
                    serving.cancel()
        finally:
            await bus.close()


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], BusHarness]] = {
    "memory": lambda _request: MemoryHarness(),
    "nats": lambda request: NatsHarness(request.getfixturevalue("nats_server")),
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> BusHarness:
    return HARNESSES[request.param](request)


@pytest.fixture
async def bus(harness: BusHarness) -> AsyncIterator[MessageBus]:
    bus = await harness.open()
    try:
        yield bus
    finally:
        await bus.close()
        await harness.reset()

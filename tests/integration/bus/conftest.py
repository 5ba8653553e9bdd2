"""The adapters the MessageBus compliance suite runs against.

To add an adapter, write a ``BusHarness`` for it and list its factory in ``HARNESSES``: the tests
only ever see ``MessageBus`` plus the few test-side helpers a harness provides.
"""

from __future__ import annotations

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


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], BusHarness]] = {
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

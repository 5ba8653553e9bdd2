"""MessageBus in memory, for tests and a one-process platform: no NATS server, same behaviour.

A ``MemoryServer`` stands for one NATS server with JetStream; each ``MemoryBus`` is one client
connection to it (``server.connect()``, or ``MemoryBus()`` for a private server). Give a
publisher and a worker separate buses on one server and they behave like two processes.

It passes the ``MessageBus`` compliance suite (``tests/integration/bus``) next to ``NatsBus``,
and raises what ``NatsBus`` raises: ``ServiceUnavailableError`` when the server is stopped or
the bus closed, when nothing stores a JetStream publish and when a request has no responders;
``NotFoundError`` for a missing stream or consumer; ``InvalidInputError`` for a malformed
subject, a too large payload or a refused consumer; ``ConflictError`` for a stream update NATS
refuses; the builtin ``TimeoutError`` from ``Subscription.next`` and ``request``; and, like
nats-py, ``ValueError`` for an invalid stream or consumer name, batch size or fetch timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from forge.domain.messages import StreamSpec
from forge.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.bus import BusMessage, StoredMessage
from forge.ports.fakes._memory_core import CoreMsg, CoreSub, MemorySubscription
from forge.ports.fakes._memory_streams import Consumer, Delivery, Stream
from forge.ports.fakes._subjects import is_valid_name, is_valid_pattern, is_valid_subject, matches, overlap

__all__ = ["MemoryBus", "MemoryMessage", "MemoryServer", "MemorySubscription"]

# The stream settings NatsBus gives the server (see ``NatsBus._stream_config``).
_DAY = 24 * 3600.0
_RESULTS_MAX_AGE = _DAY
_DLQ_MAX_AGE = 7 * _DAY
_DUPLICATE_WINDOW = 120.0
_JOB_DUPLICATE_WINDOW = 2 * 3600.0
#: nats-server's default ``max_payload``; nats-py refuses larger messages before sending.
_MAX_PAYLOAD = 1024 * 1024
#: Shortest sleep of a fetch waiting for a redelivery, so a timer at "now" never spins.
_MIN_WAIT = 0.001


@dataclass(frozen=True)
class _PubAck:
    stream: str
    seq: int
    duplicate: bool

    def to_json(self) -> bytes:
        body: dict[str, object] = {"stream": self.stream, "seq": self.seq}
        if self.duplicate:
            body["duplicate"] = True
        return json.dumps(body, separators=(",", ":")).encode()


class MemoryServer:
    """One in-memory NATS server with JetStream; ``connect()`` opens a client on it.

    ``stop()`` makes it unreachable (every call of every bus raises ``ServiceUnavailableError``
    until ``start()``; streams survive, as JetStream's file storage does); ``reset()`` deletes
    every stream, like a fresh server.
    """

    def __init__(self, name: str = "memory") -> None:
        self.url = f"memory://{name}"
        self._running = True
        self._streams: dict[str, Stream] = {}
        self._subs: list[CoreSub] = []
        self._waiters: set[asyncio.Event] = set()

    @property
    def running(self) -> bool:
        return self._running

    def connect(self) -> MemoryBus:
        """A new connection; ``ServiceUnavailableError`` when the server is stopped."""
        return MemoryBus(self)

    def stop(self) -> None:
        self._running = False
        self.wake()

    def start(self) -> None:
        self._running = True

    def reset(self) -> None:
        self._streams.clear()
        self.wake()

    # --- what its connections ask of it (public for MemoryBus and MemoryMessage; tests may look) ---

    def wake(self) -> None:
        """Let every waiting fetch look again (something changed; most wakes are for others)."""
        for event in self._waiters:
            event.set()

    async def wait(self, seconds: float) -> None:
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(event)

    def stream(self, what: str, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            raise NotFoundError(f"NATS {what}: stream not found", details={"err_code": 10059})
        return stream

    def consumer(self, what: str, stream_name: str, durable: str) -> tuple[Stream, Consumer]:
        stream = self.stream(what, stream_name)
        consumer = stream.consumers.get(durable)
        if consumer is None:
            raise NotFoundError(f"NATS {what}: consumer not found", details={"err_code": 10014})
        return stream, consumer

    def ensure_stream(self, spec: StreamSpec) -> None:
        what = f"ensure stream {spec.name}"
        subjects = spec.subjects or (spec.name,)  # NATS listens on the name when given no subject
        existing = self._streams.get(spec.name)
        # NATS refuses a bad config with a 500 to an update (NatsBus: ConflictError) and to a
        # creation (NatsBus counts a ServerError as unavailable), with a 400 to an overlap.
        refused = ServiceUnavailableError if existing is None else ConflictError
        if existing is not None and existing.work_queue != spec.work_queue:
            raise ConflictError(
                f"stream {spec.name} exists with an incompatible configuration: "
                "stream configuration update can not change retention policy to/from workqueue",
                details={"err_code": 10052},
            )
        if not all(is_valid_pattern(s) for s in subjects):
            raise refused(f"NATS {what}: invalid subject", details={"err_code": 10052})
        for other in self._streams.values():
            if other.name != spec.name and any(overlap(a, b) for a in subjects for b in other.subjects):
                message = f"NATS {what}: subjects overlap with an existing stream"
                if existing is None:
                    raise InvalidInputError(message, details={"err_code": 10065})
                raise ConflictError(message, details={"err_code": 10065})
        if existing is not None:
            existing.subjects = subjects
            return
        if spec.work_queue:
            max_age, window = 0.0, _JOB_DUPLICATE_WINDOW
        else:
            max_age = _DLQ_MAX_AGE if spec.name.endswith("dlq") else _RESULTS_MAX_AGE
            window = _DUPLICATE_WINDOW
        self._streams[spec.name] = Stream(spec.name, subjects, spec.work_queue, window, max_age)

    def ensure_consumer(
        self, stream_name: str, durable: str, filter_subject: str | None, ack_wait: float, max_deliver: int
    ) -> None:
        what = f"ensure consumer {stream_name}/{durable}"
        stream = self.stream(what, stream_name)
        if filter_subject is not None and not is_valid_pattern(filter_subject):
            raise InvalidInputError(f"NATS {what}: invalid filter subject", details={"err_code": 10093})
        if stream.work_queue:
            for other in stream.consumers.values():
                if other.name == durable:
                    continue
                if filter_subject is None:
                    reason, code = "multiple non-filtered consumers not allowed on workqueue stream", 10099
                elif other.filter_subject is None or overlap(filter_subject, other.filter_subject):
                    reason, code = "filtered consumer not unique on workqueue stream", 10100
                else:
                    continue
                raise InvalidInputError(f"NATS {what}: {reason}", details={"err_code": code})
        consumer = stream.consumers.get(durable)
        if consumer is None:
            consumer = Consumer(durable, filter_subject, ack_wait, max_deliver, next_seq=stream.first_seq())
            stream.consumers[durable] = consumer
        consumer.configure(filter_subject, ack_wait, max_deliver)
        self.wake()

    def route(self, subject: str, data: bytes, headers: Mapping[str, str], reply: str | None) -> _PubAck | None:
        """Store into the stream that captures ``subject`` (if any), then deliver to core subscribers."""
        ack = None
        stream = self.capturing(subject)
        if stream is not None:
            seq, duplicate = stream.store(subject, data, headers, time.monotonic())
            ack = _PubAck(stream.name, seq, duplicate)
            self.wake()
        for sub in self.interested(subject):
            sub.put(CoreMsg(subject, data, reply))
        return ack

    def find(self, name: str) -> Stream | None:
        return self._streams.get(name)

    def capturing(self, subject: str) -> Stream | None:
        """The stream that stores what is published on ``subject`` (streams never overlap)."""
        return next((s for s in self._streams.values() if s.captures(subject)), None)

    def interested(self, subject: str) -> list[CoreSub]:
        return [sub for sub in self._subs if matches(sub.pattern, subject)]

    def add_subscription(self, pattern: str) -> CoreSub:
        sub = CoreSub(pattern)
        self._subs.append(sub)
        return sub

    def remove_subscription(self, sub: CoreSub) -> None:
        sub.close()
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def settle(self, stream_name: str, durable: str, seq: int) -> None:
        stream = self._streams.get(stream_name)
        consumer = stream.consumers.get(durable) if stream is not None else None
        if stream is not None and consumer is not None:
            consumer.settle(stream, seq)

    def nak(self, stream_name: str, durable: str, seq: int, delay: float | None) -> None:
        stream = self._streams.get(stream_name)
        consumer = stream.consumers.get(durable) if stream is not None else None
        if consumer is not None:
            consumer.nak(seq, time.monotonic(), delay)
            self.wake()

    def in_progress(self, stream_name: str, durable: str, seq: int) -> None:
        stream = self._streams.get(stream_name)
        consumer = stream.consumers.get(durable) if stream is not None else None
        if consumer is not None:
            consumer.in_progress(seq, time.monotonic())


class MemoryMessage:
    """One delivery to a pull consumer, satisfying ``BusMessage``.

    Like a nats-py message it refuses a second ack, nak or term (``in_progress`` is always fine);
    an ack that comes late still counts while the server holds the message.
    """

    __slots__ = ("_bus", "_delivery", "_done", "_durable", "_stream")

    def __init__(self, bus: MemoryBus, stream: str, durable: str, delivery: Delivery) -> None:
        self._bus = bus
        self._stream = stream
        self._durable = durable
        self._delivery = delivery
        self._done = False

    @property
    def subject(self) -> str:
        return self._delivery.stored.subject

    @property
    def data(self) -> bytes:
        return self._delivery.stored.data

    @property
    def headers(self) -> Mapping[str, str]:
        return dict(self._delivery.stored.headers)

    @property
    def num_delivered(self) -> int:
        return self._delivery.num_delivered

    @property
    def _seq(self) -> int:
        return self._delivery.stored.seq

    def _reply(self, what: str) -> MemoryServer:
        server = _live(self._bus, what)
        if self._done:
            raise ServiceUnavailableError(f"NATS {what} failed: nats: message was already acknowledged")
        self._done = True
        return server

    async def ack(self) -> None:
        self._reply("ack").settle(self._stream, self._durable, self._seq)

    async def nak(self, delay: float | None = None) -> None:
        self._reply("nak").nak(self._stream, self._durable, self._seq, delay)

    async def in_progress(self) -> None:
        _live(self._bus, "in_progress").in_progress(self._stream, self._durable, self._seq)

    async def term(self) -> None:
        self._reply("term").settle(self._stream, self._durable, self._seq)


class MemoryBus:
    """``MessageBus`` on one connection to a ``MemoryServer`` (a private one when none is given)."""

    def __init__(self, server: MemoryServer | None = None) -> None:
        self.server = server if server is not None else MemoryServer()
        if not self.server.running:
            raise ServiceUnavailableError(f"cannot connect to NATS at {self.server.url}: server is down")
        self._closed = False
        self._subs: set[CoreSub] = set()

    def connect(self) -> MemoryBus:
        """Another connection to the same server (a second process)."""
        return MemoryBus(self.server)

    @property
    def closed(self) -> bool:
        return self._closed

    def _live(self, what: str) -> MemoryServer:
        return _live(self, what)

    def _outgoing(self, what: str, subject: str, data: bytes) -> MemoryServer:
        """The checks nats-py makes before it sends a message, in its order."""
        if not is_valid_subject(subject):
            raise InvalidInputError(f"NATS {what}: nats: invalid subject", details={"err_code": None})
        server = self._live(what)
        if len(data) > _MAX_PAYLOAD:
            raise InvalidInputError(f"NATS {what}: nats: maximum payload exceeded", details={"err_code": None})
        return server

    async def ensure_streams(self, streams: Sequence[StreamSpec]) -> None:
        for spec in streams:
            _check_names(stream=spec.name)
            self._live(f"ensure stream {spec.name}").ensure_stream(spec)

    async def ensure_consumer(
        self, stream: str, durable: str, *, filter_subject: str | None, ack_wait: float, max_deliver: int
    ) -> None:
        _check_names(stream=stream, consumer=durable)
        server = self._live(f"ensure consumer {stream}/{durable}")
        server.ensure_consumer(stream, durable, filter_subject, ack_wait, max_deliver)

    async def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> bool:
        hdrs: dict[str, str] = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        what = f"publish on {subject}"
        ack = self._outgoing(what, subject, data).route(subject, data, hdrs, None)
        if ack is None:
            raise ServiceUnavailableError(f"NATS is unavailable ({what}): nats: no responders available for request")
        return not ack.duplicate

    async def publish_if_last(self, subject: str, data: bytes, *, last_sequence: int) -> int:
        what = f"publish on {subject}"
        server = self._outgoing(what, subject, data)
        stream = server.capturing(subject)
        if stream is not None:
            stream.expire(time.monotonic())
            newest = stream.last_on(subject)
            if (0 if newest is None else newest.seq) != last_sequence:
                raise ConflictError(
                    f"{subject} holds a newer message than sequence {last_sequence}", details={"err_code": 10071}
                )
        ack = server.route(subject, data, {"Nats-Expected-Last-Subject-Sequence": str(last_sequence)}, None)
        if ack is None:
            raise ServiceUnavailableError(f"NATS is unavailable ({what}): nats: no responders available for request")
        return ack.seq

    async def fetch(self, stream: str, durable: str, *, batch: int, timeout: float) -> list[BusMessage]:
        if batch < 1:
            raise ValueError("nats: invalid batch size")
        if timeout <= 0:
            raise ValueError("nats: invalid fetch timeout")
        _check_names(stream=stream, consumer=durable)
        what = f"fetch {stream}/{durable}"
        deadline = time.monotonic() + timeout
        while True:
            server = self._live(what)
            found, consumer = server.consumer(what, stream, durable)
            now = time.monotonic()
            got = consumer.take(found, batch, now)
            if got:
                return [MemoryMessage(self, stream, durable, d) for d in got]
            if now >= deadline:
                return []
            ready = consumer.next_ready_at(found, now)
            until = deadline if ready is None else min(deadline, ready)
            await server.wait(max(until - now, _MIN_WAIT))

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        _check_names(stream=stream)
        what = f"stream info {stream}"
        found = self._live(what).stream(what, stream)
        found.expire(time.monotonic())
        return found.first_seq(), found.last_seq

    async def consumer_lag(self, stream: str) -> dict[str, int]:
        _check_names(stream=stream)
        what = f"consumers of {stream}"
        found = self._live(what).stream(what, stream)
        now = time.monotonic()
        found.expire(now)
        return {name: consumer.lag(found, now) for name, consumer in found.consumers.items()}

    async def last_payload(self, stream: str, subject: str) -> bytes | None:
        stored = await self.last_message(stream, subject)
        return None if stored is None else stored.data

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        _check_names(stream=stream)
        what = f"last message of {stream}/{subject}"
        found = self._live(what).find(stream)
        if found is None:
            raise NotFoundError(f"stream {stream} does not exist")
        found.expire(time.monotonic())
        stored = found.last_on(subject)
        return None if stored is None else StoredMessage(stored.data, stored.seq)

    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str) -> AsyncIterator[MemorySubscription]:
        what = f"subscribe to {subject}"
        if not is_valid_pattern(subject):
            raise InvalidInputError(f"NATS {what}: nats: invalid subject", details={"err_code": None})
        sub = self._live(what).add_subscription(subject)
        self._subs.add(sub)
        try:
            yield MemorySubscription(sub)
        finally:
            self._subs.discard(sub)
            self.server.remove_subscription(sub)

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        what = f"request on {subject}"
        server = self._outgoing(what, subject, data)
        if server.capturing(subject) is None and not server.interested(subject):
            raise ServiceUnavailableError(f"NATS is unavailable ({what}): nats: no responders available for request")
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        sub = server.add_subscription(inbox)
        self._subs.add(sub)
        try:
            ack = server.route(subject, data, {}, inbox)
            if ack is not None:  # JetStream answers first, with its publish ack
                return ack.to_json()
            return (await MemorySubscription(sub).testing_next_with_reply(timeout))[0]
        except TimeoutError as exc:
            raise TimeoutError(f"NATS {what} timed out") from exc
        finally:
            self._subs.discard(sub)
            server.remove_subscription(sub)

    async def respond(self, subject: str, data: bytes) -> None:
        self._outgoing(f"publish on {subject}", subject, data).route(subject, data, {}, None)

    async def ping(self) -> None:
        if self._closed or not self.server.running:
            raise ServiceUnavailableError("NATS connection is not established")

    async def close(self) -> None:
        """Drop this connection's subscriptions and wake its waiting fetches; never raises."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            self.server.remove_subscription(sub)
        self._subs.clear()
        self.server.wake()


def _check_names(*, stream: str, consumer: str | None = None) -> None:
    """nats-py refuses names the server could not use as file names, with a ``ValueError``."""
    if not is_valid_name(stream):
        raise ValueError(f"nats: invalid stream name: {stream!r}")
    if consumer is not None and not is_valid_name(consumer):
        raise ValueError(f"nats: invalid consumer name: {consumer!r}")


def _live(bus: MemoryBus, what: str) -> MemoryServer:
    """The server of ``bus``, or ``ServiceUnavailableError`` as nats-py raises it when closed or cut off."""
    if bus.closed:
        raise ServiceUnavailableError(f"NATS is unavailable ({what}): nats: connection closed")
    if not bus.server.running:
        raise ServiceUnavailableError(f"NATS is unavailable ({what}): server is down")
    return bus.server

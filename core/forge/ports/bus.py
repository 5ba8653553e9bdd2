"""MessageBus: NATS JetStream streams, durable pull consumers, publish, request-reply (DESIGN §6)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from forge.domain.messages import StreamSpec

__all__ = ["BusMessage", "MessageBus", "StoredMessage", "Subscription"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message stored in a stream: its payload and its stream sequence."""

    data: bytes
    sequence: int


class BusMessage(Protocol):
    """One delivery of a JetStream message to a pull consumer."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def num_delivered(self) -> int: ...

    async def ack(self) -> None: ...
    async def nak(self, delay: float | None = None) -> None: ...
    async def in_progress(self) -> None:
        """Send ``+WPI`` so the server restarts the ack timer of a long job."""

    async def term(self) -> None:
        """Stop redelivery for good (after the job went to the DLQ)."""


class Subscription(Protocol):
    """A core NATS subscription; iterate to receive payloads."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def next(self, timeout: float) -> bytes:
        """The next payload; ``TimeoutError`` when none arrives in time."""


class MessageBus(Protocol):
    async def ensure_streams(self, streams: Sequence[StreamSpec]) -> None:
        """Create the streams, or update their subjects, idempotently."""

    async def ensure_consumer(
        self, stream: str, durable: str, *, filter_subject: str | None, ack_wait: float, max_deliver: int
    ) -> None:
        """Create the durable pull consumer idempotently (explicit ack)."""

    async def publish(
        self, subject: str, data: bytes, *, msg_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> bool:
        """Publish into JetStream and wait for the ack; False when ``msg_id`` was a duplicate."""

    async def publish_if_last(self, subject: str, data: bytes, *, last_sequence: int) -> int:
        """Publish only if the newest message stored on ``subject`` has the stream sequence ``last_sequence``
        (0: the subject holds none); the new message's sequence. ``ConflictError`` otherwise (JetStream's
        ``Nats-Expected-Last-Subject-Sequence``): of two publishers expecting the same sequence, one wins."""

    async def fetch(self, stream: str, durable: str, *, batch: int, timeout: float) -> list[BusMessage]:
        """Pull up to ``batch`` messages; an empty list when none arrived in ``timeout``."""

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        """(first, last) sequence stored in ``stream``; first is last + 1 when it holds nothing.

        On a work-queue stream with one consumer, ``first > n`` means every message up to ``n`` was acked.
        """

    async def last_payload(self, stream: str, subject: str) -> bytes | None:
        """The newest message stored on ``subject`` in ``stream``, or None."""

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        """The newest message stored on ``subject`` in ``stream`` with its sequence, or None."""

    async def consumer_lag(self, stream: str) -> dict[str, int]:
        """Per durable consumer of ``stream``: the messages its filter matches that are not delivered yet plus
        those delivered and not acked (NATS' ``num_pending + num_ack_pending``; what KEDA scales workers on).
        A job stream has one consumer per worker pool, so this is the lag of each pool."""

    def subscribe(self, subject: str) -> AbstractAsyncContextManager[Subscription]:
        """A core (non-JetStream) subscription, open for the life of the context."""

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        """Core request-reply; ``TimeoutError`` when no reply comes in time."""

    async def respond(self, subject: str, data: bytes) -> None:
        """Publish on core NATS (replies to an inbox)."""

    async def ping(self) -> None:
        """Round-trip to the server; raises ``ServiceUnavailableError`` when it is down."""

    async def close(self) -> None: ...

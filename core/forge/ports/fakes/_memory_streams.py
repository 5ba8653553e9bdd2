"""JetStream state of the in-memory bus: streams, their messages and durable pull consumers.

Plain synchronous bookkeeping with explicit ``now`` (``time.monotonic()``); the async surface and
the errors live in ``memory_bus``. Timers are computed, not scheduled: a pending delivery carries
the time it becomes redeliverable, and whoever fetches looks at it. So nothing runs in the
background and closing a bus has nothing to cancel.

The rules follow nats-server (checked against it by the compliance suite):
- a work-queue stream deletes a message once its consumer acks or terms it;
- ``max_deliver`` reached: the message is delivered no more but stays stored, and a late ack
  still removes it from a work queue;
- redeliveries (ack wait passed, nak) go out before messages never delivered;
- a consumer starts at the first stored message (deliver policy "all").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from forge.ports.fakes._subjects import matches

__all__ = ["DEFAULT_ACK_WAIT", "MAX_ACK_PENDING", "Consumer", "Delivery", "Stored", "Stream"]

#: nats-server's default for a consumer created without ``max_ack_pending``.
MAX_ACK_PENDING = 1000
#: nats-server's default ack wait, used when ``ack_wait`` is not positive.
DEFAULT_ACK_WAIT = 30.0


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str]
    time: float


@dataclass(frozen=True)
class Delivery:
    stored: Stored
    num_delivered: int


@dataclass
class _Pending:
    deliveries: int
    ready_at: float  # when the ack wait (or a nak delay) runs out and it may go out again


@dataclass
class Consumer:
    name: str
    filter_subject: str | None
    ack_wait: float
    max_deliver: int  # 0 or less: unlimited
    next_seq: int  # the next stream sequence never delivered
    pending: dict[int, _Pending] = field(default_factory=dict)
    exhausted: set[int] = field(default_factory=set)  # delivered max_deliver times, never acked

    def configure(self, filter_subject: str | None, ack_wait: float, max_deliver: int) -> None:
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait if ack_wait > 0 else DEFAULT_ACK_WAIT
        self.max_deliver = max_deliver

    def wants(self, subject: str) -> bool:
        return self.filter_subject is None or matches(self.filter_subject, subject)

    def _used_up(self, pending: _Pending) -> bool:
        return 0 < self.max_deliver <= pending.deliveries

    def _sweep(self, stream: Stream, now: float) -> None:
        """Retire deliveries whose message is gone, or that timed out on their last attempt."""
        for seq, pending in list(self.pending.items()):
            if seq not in stream.messages:
                del self.pending[seq]
            elif pending.ready_at <= now and self._used_up(pending):
                del self.pending[seq]
                self.exhausted.add(seq)
        self.exhausted.intersection_update(stream.messages)

    def take(self, stream: Stream, batch: int, now: float) -> list[Delivery]:
        """Deliver up to ``batch`` messages: due redeliveries first, then new ones in order."""
        self._sweep(stream, now)
        out: list[Delivery] = []
        due = sorted((p.ready_at, seq) for seq, p in self.pending.items() if p.ready_at <= now)
        for _, seq in due[:batch]:
            pending = self.pending[seq]
            pending.deliveries += 1
            pending.ready_at = now + self.ack_wait
            out.append(Delivery(stream.messages[seq], pending.deliveries))
        while len(out) < batch and self.next_seq <= stream.last_seq and len(self.pending) < MAX_ACK_PENDING:
            seq = self.next_seq
            self.next_seq += 1
            stored = stream.messages.get(seq)
            if stored is None or not self.wants(stored.subject):
                continue
            self.pending[seq] = _Pending(deliveries=1, ready_at=now + self.ack_wait)
            out.append(Delivery(stored, 1))
        return out

    def lag(self, stream: Stream, now: float) -> int:
        """Not yet delivered messages its filter matches, plus delivered ones not acked."""
        self._sweep(stream, now)
        waiting = sum(1 for seq, s in stream.messages.items() if seq >= self.next_seq and self.wants(s.subject))
        return waiting + len(self.pending) + len(self.exhausted)

    def next_ready_at(self, stream: Stream, now: float) -> float | None:
        """When the earliest pending delivery may go out again (None: nothing is pending)."""
        self._sweep(stream, now)
        return min((p.ready_at for p in self.pending.values()), default=None)

    def settle(self, stream: Stream, seq: int) -> None:
        """Ack or term: no more redelivery; a work queue forgets the message."""
        found = self.pending.pop(seq, None) is not None or seq in self.exhausted
        self.exhausted.discard(seq)
        if found and stream.work_queue:
            stream.messages.pop(seq, None)

    def nak(self, seq: int, now: float, delay: float | None) -> None:
        pending = self.pending.get(seq)
        if pending is not None:
            pending.ready_at = now + (delay if delay is not None and delay > 0 else 0.0)

    def in_progress(self, seq: int, now: float) -> None:
        pending = self.pending.get(seq)
        if pending is not None:
            pending.ready_at = now + self.ack_wait


@dataclass
class Stream:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool
    duplicate_window: float
    max_age: float  # 0: keep forever
    messages: dict[int, Stored] = field(default_factory=dict)
    last_seq: int = 0
    consumers: dict[str, Consumer] = field(default_factory=dict)
    _msg_ids: dict[str, tuple[int, float]] = field(default_factory=dict)

    def captures(self, subject: str) -> bool:
        return any(matches(pattern, subject) for pattern in self.subjects)

    def expire(self, now: float) -> None:
        if self.max_age > 0:
            for seq, stored in list(self.messages.items()):
                if stored.time > now - self.max_age:
                    break
                del self.messages[seq]
        for msg_id, (_, at) in list(self._msg_ids.items()):
            if at > now - self.duplicate_window:
                break
            del self._msg_ids[msg_id]

    def store(self, subject: str, data: bytes, headers: Mapping[str, str], now: float) -> tuple[int, bool]:
        """Append a message; (its sequence, whether it was a duplicate by ``Nats-Msg-Id``)."""
        self.expire(now)
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id is not None and msg_id in self._msg_ids:
            return self._msg_ids[msg_id][0], True
        self.last_seq += 1
        self.messages[self.last_seq] = Stored(self.last_seq, subject, data, dict(headers), now)
        if msg_id is not None:
            self._msg_ids[msg_id] = (self.last_seq, now)
        return self.last_seq, False

    def first_seq(self) -> int:
        return next(iter(self.messages), self.last_seq + 1)

    def last_on(self, subject: str) -> Stored | None:
        for stored in reversed(self.messages.values()):
            if matches(subject, stored.subject):
                return stored
        return None

"""MessageBus compliance: every adapter (see conftest ``HARNESSES``) passes the same tests on a real server.

Timing is only ever used as a generous upper bound (a redelivery must come within seconds, a
message nak'ed for a minute must not come back within one second); durations are never asserted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from forge.domain.messages import STREAMS, StreamSpec
from forge.errors import ConflictError, ServiceUnavailableError
from forge.ports.bus import BusMessage, MessageBus

if TYPE_CHECKING:
    from tests.integration.bus.conftest import BusHarness

WITHIN = 10.0  # upper bound for anything that must happen "soon"
QUIET = 1.0  # how long to watch for something that must not happen


def new_stream(*, work_queue: bool = True) -> StreamSpec:
    token = uuid.uuid4().hex[:12]
    return StreamSpec(name=f"test-{token}", subjects=(f"t{token}.>",), work_queue=work_queue)


def subject_in(spec: StreamSpec, *tokens: str) -> str:
    return ".".join((spec.subjects[0].removesuffix(".>"), *tokens))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WITHIN) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.05)


async def queue_with_consumer(
    bus: MessageBus, *, ack_wait: float = 30.0, max_deliver: int = 5, work_queue: bool = True
) -> StreamSpec:
    spec = new_stream(work_queue=work_queue)
    await bus.ensure_streams([spec])
    await bus.ensure_consumer(
        spec.name, "worker", filter_subject=spec.subjects[0], ack_wait=ack_wait, max_deliver=max_deliver
    )
    return spec


async def fetch_one(bus: MessageBus, spec: StreamSpec) -> BusMessage:
    msgs = await bus.fetch(spec.name, "worker", batch=1, timeout=WITHIN)
    assert len(msgs) == 1
    return msgs[0]


async def assert_nothing_to_fetch(bus: MessageBus, spec: StreamSpec, quiet: float = QUIET) -> None:
    assert await bus.fetch(spec.name, "worker", batch=1, timeout=quiet) == []


# --- streams and consumers ---------------------------------------------------------------------


async def test_ensure_streams_creates_every_stream_idempotently(bus: MessageBus) -> None:
    await bus.ensure_streams(STREAMS)
    await bus.ensure_streams(STREAMS)
    for spec in STREAMS:
        subject = subject_in(spec, "probe")
        assert await bus.publish(subject, spec.name.encode())
        assert await bus.last_payload(spec.name, subject) == spec.name.encode()


async def test_ensure_streams_updates_subjects(bus: MessageBus) -> None:
    spec = new_stream()
    await bus.ensure_streams([spec])
    extra = f"x{uuid.uuid4().hex[:8]}.>"
    await bus.ensure_streams([spec.model_copy(update={"subjects": (*spec.subjects, extra)})])
    subject = extra.replace(">", "one")
    assert await bus.publish(subject, b"routed")
    assert await bus.last_payload(spec.name, subject) == b"routed"


async def test_publish_to_no_stream_is_unavailable(bus: MessageBus) -> None:
    with pytest.raises(ServiceUnavailableError):
        await bus.publish(f"nostream{uuid.uuid4().hex}.x", b"lost")


# --- publish, fetch, ack -----------------------------------------------------------------------


async def test_trace_context_headers_travel_with_a_job_unchanged(bus: MessageBus) -> None:
    """What a dispatcher sends with a job (``traceparent``/``tracestate``, lower case as W3C and the
    OpenTelemetry propagator write them, beside the reply inbox and the dedupe id) is what a worker reads."""
    spec = await queue_with_consumer(bus)
    sent = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "forge=1,vendor=a:b",
        "Forge-Reply-To": "_INBOX.forge.abc",
    }
    assert await bus.publish(subject_in(spec, "traced"), b"job", msg_id="traced-1", headers=sent)
    msg = await fetch_one(bus, spec)
    assert {k: v for k, v in msg.headers.items() if k in sent} == sent
    assert msg.headers["Nats-Msg-Id"] == "traced-1"
    await msg.ack()


async def test_publish_fetch_ack_removes_from_work_queue(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus)
    await bus.ensure_consumer(spec.name, "worker", filter_subject=spec.subjects[0], ack_wait=30.0, max_deliver=5)
    subject = subject_in(spec, "job1")
    assert await bus.publish(subject, b"payload", headers={"Forge-Trace": "abc"})

    msg = await fetch_one(bus, spec)
    assert (msg.subject, msg.data, msg.num_delivered) == (subject, b"payload", 1)
    assert msg.headers["Forge-Trace"] == "abc"
    await msg.ack()

    async def removed() -> bool:
        return await bus.last_payload(spec.name, subject) is None

    await eventually(removed)
    await assert_nothing_to_fetch(bus, spec)


async def test_fetch_returns_a_batch_in_order(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus)
    for i in range(5):
        assert await bus.publish(subject_in(spec, str(i)), str(i).encode())
    got: list[bytes] = []
    async with asyncio.timeout(WITHIN):
        while len(got) < 5:
            for msg in await bus.fetch(spec.name, "worker", batch=5, timeout=WITHIN):
                got.append(msg.data)
                await msg.ack()
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_stream_bounds_tell_what_a_work_queue_still_holds(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus)
    assert await bus.stream_bounds(spec.name) == (1, 0)  # empty: first is last + 1
    for i in range(3):
        await bus.publish(subject_in(spec, str(i)), b"x")
    assert await bus.stream_bounds(spec.name) == (1, 3)
    first = await fetch_one(bus, spec)
    await first.ack()

    async def first_acked() -> bool:
        return (await bus.stream_bounds(spec.name))[0] == 2

    await eventually(first_acked)
    for _ in range(2):
        await (await fetch_one(bus, spec)).ack()

    async def all_acked() -> bool:
        return await bus.stream_bounds(spec.name) == (4, 3)

    await eventually(all_acked)


async def test_limits_stream_keeps_acked_messages(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus, work_queue=False)
    subject = subject_in(spec, "k")
    await bus.publish(subject, b"kept")
    await (await fetch_one(bus, spec)).ack()
    await assert_nothing_to_fetch(bus, spec)
    assert await bus.last_payload(spec.name, subject) == b"kept"


async def test_msg_id_deduplicates(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus)
    subject = subject_in(spec, "job")
    assert await bus.publish(subject, b"first", msg_id="job-key-1") is True
    assert await bus.publish(subject, b"second", msg_id="job-key-1") is False
    assert await bus.publish(subject, b"other", msg_id="job-key-2") is True

    msgs = await bus.fetch(spec.name, "worker", batch=10, timeout=2.0)
    assert [m.data for m in msgs] == [b"first", b"other"]
    assert msgs[0].headers["Nats-Msg-Id"] == "job-key-1"


# --- redelivery --------------------------------------------------------------------------------


async def test_unacked_message_is_redelivered_after_ack_wait(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus, ack_wait=0.5)
    await bus.publish(subject_in(spec, "job"), b"again")
    first = await fetch_one(bus, spec)
    assert first.num_delivered == 1

    second = await fetch_one(bus, spec)
    assert (second.data, second.num_delivered) == (b"again", 2)
    await second.ack()


async def test_in_progress_holds_off_redelivery(bus: MessageBus) -> None:
    ack_wait = 1.0
    spec = await queue_with_consumer(bus, ack_wait=ack_wait)
    await bus.publish(subject_in(spec, "long"), b"slow job")
    msg = await fetch_one(bus, spec)
    for _ in range(12):  # three times ack_wait in all, a heartbeat every quarter of it
        await msg.in_progress()
        assert await bus.fetch(spec.name, "worker", batch=1, timeout=ack_wait / 4) == []
    await msg.ack()
    await assert_nothing_to_fetch(bus, spec, quiet=2 * ack_wait)


async def test_nak_with_delay_redelivers_later(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus)
    await bus.publish(subject_in(spec, "a"), b"parked")
    await (await fetch_one(bus, spec)).nak(delay=60.0)
    await assert_nothing_to_fetch(bus, spec)

    await bus.publish(subject_in(spec, "b"), b"retry")
    msg = await fetch_one(bus, spec)
    assert msg.data == b"retry"
    await msg.nak(delay=0.2)
    again = await fetch_one(bus, spec)
    assert (again.data, again.num_delivered) == (b"retry", 2)
    await again.ack()


async def test_max_deliver_stops_redelivery(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus, ack_wait=0.5, max_deliver=2)
    await bus.publish(subject_in(spec, "poison"), b"poison")
    first = await fetch_one(bus, spec)
    await first.nak()
    second = await fetch_one(bus, spec)
    assert second.num_delivered == 2
    await second.nak()
    await assert_nothing_to_fetch(bus, spec, quiet=2.0)


async def test_term_stops_redelivery(bus: MessageBus) -> None:
    spec = await queue_with_consumer(bus, ack_wait=0.5)
    await bus.publish(subject_in(spec, "dead"), b"to the dlq")
    await (await fetch_one(bus, spec)).term()
    await assert_nothing_to_fetch(bus, spec, quiet=2.0)


# --- last payload ------------------------------------------------------------------------------


async def test_last_payload_is_the_newest_on_its_subject(bus: MessageBus) -> None:
    spec = new_stream(work_queue=False)
    await bus.ensure_streams([spec])
    one, two = subject_in(spec, "one"), subject_in(spec, "two")
    await bus.publish(one, b"old")
    await bus.publish(two, b"other")
    await bus.publish(one, b"new")
    assert await bus.last_payload(spec.name, one) == b"new"
    assert await bus.last_payload(spec.name, two) == b"other"
    assert await bus.last_payload(spec.name, subject_in(spec, "never")) is None


# --- core NATS ---------------------------------------------------------------------------------


async def test_subscribe_receives_and_next_times_out(bus: MessageBus) -> None:
    subject = f"core.{uuid.uuid4().hex}.events"
    async with bus.subscribe(subject) as sub:
        await bus.respond(subject, b"one")
        assert await sub.next(timeout=WITHIN) == b"one"
        with pytest.raises(TimeoutError):
            await sub.next(timeout=0.2)

        await bus.respond(subject, b"two")
        await bus.respond(subject, b"three")
        got: list[bytes] = []
        async with asyncio.timeout(WITHIN):
            async for payload in sub:
                got.append(payload)
                if len(got) == 2:
                    break
        assert got == [b"two", b"three"]


async def test_request_gets_the_reply(harness: BusHarness, bus: MessageBus) -> None:
    subject = f"rpc.{uuid.uuid4().hex}"
    async with harness.responder(subject, bytes.upper):
        assert await bus.request(subject, b"hello", timeout=WITHIN) == b"HELLO"


async def test_request_times_out_when_nobody_answers(bus: MessageBus) -> None:
    subject = f"rpc.{uuid.uuid4().hex}"
    async with bus.subscribe(subject):  # a responder that never replies
        with pytest.raises(TimeoutError):
            await bus.request(subject, b"hello", timeout=0.3)


async def test_request_without_responders_is_unavailable(bus: MessageBus) -> None:
    with pytest.raises(ServiceUnavailableError):
        await bus.request(f"rpc.{uuid.uuid4().hex}", b"hello", timeout=WITHIN)


# --- connection --------------------------------------------------------------------------------


async def test_ping_then_close(bus: MessageBus) -> None:
    await bus.ping()
    await bus.close()
    with pytest.raises(ServiceUnavailableError):
        await bus.ping()


async def test_connect_to_nothing_is_unavailable(harness: BusHarness) -> None:
    with pytest.raises(ServiceUnavailableError):
        await harness.open_unreachable()


async def test_last_message_carries_its_sequence(bus: MessageBus) -> None:
    spec = new_stream(work_queue=False)
    await bus.ensure_streams([spec])
    subject = subject_in(spec, "a")
    assert await bus.last_message(spec.name, subject) is None
    await bus.publish(subject, b"one")
    await bus.publish(subject_in(spec, "b"), b"other")
    await bus.publish(subject, b"two")
    stored = await bus.last_message(spec.name, subject)
    assert stored is not None
    assert (stored.data, stored.sequence) == (b"two", 3)


async def test_publish_if_last_lets_the_first_claim_win_and_refuses_the_second(bus: MessageBus) -> None:
    spec = new_stream(work_queue=False)
    await bus.ensure_streams([spec])
    subject = subject_in(spec, "claim")
    await bus.publish(subject_in(spec, "elsewhere"), b"x")  # another subject's messages do not count
    first = await bus.publish_if_last(subject, b"first", last_sequence=0)
    assert first == 2
    with pytest.raises(ConflictError):
        await bus.publish_if_last(subject, b"second", last_sequence=0)
    stored = await bus.last_message(spec.name, subject)
    assert stored is not None
    assert (stored.data, stored.sequence) == (b"first", first)


async def test_publish_if_last_renews_by_the_holder_and_takes_over_once(harness: BusHarness, bus: MessageBus) -> None:
    spec = new_stream(work_queue=False)
    await bus.ensure_streams([spec])
    subject = subject_in(spec, "claim")
    held = await bus.publish_if_last(subject, b"holder", last_sequence=0)
    renewed = await bus.publish_if_last(subject, b"holder again", last_sequence=held)  # the holder renews
    assert renewed > held
    with pytest.raises(ConflictError):  # a renewal expecting an old sequence is refused
        await bus.publish_if_last(subject, b"late", last_sequence=held)
    other = await harness.open()
    try:  # two takers of the same (stale) claim, on two connections, at once: one wins
        outcomes = await asyncio.gather(
            bus.publish_if_last(subject, b"taker one", last_sequence=renewed),
            other.publish_if_last(subject, b"taker two", last_sequence=renewed),
            return_exceptions=True,
        )
    finally:
        await other.close()
    won = [o for o in outcomes if isinstance(o, int)]
    assert len(won) == 1, outcomes
    assert sum(isinstance(o, ConflictError) for o in outcomes) == 1, outcomes
    stored = await bus.last_message(spec.name, subject)
    assert stored is not None
    assert stored.sequence == won[0]
    assert stored.data == (b"taker one" if isinstance(outcomes[0], int) else b"taker two")

"""MemoryBus beyond the compliance suite: several connections, a stopped server, the errors NatsBus raises.

The behaviour both adapters share is proven in ``tests/integration/bus/test_bus_compliance.py``;
what is here was checked by hand against a real nats-server and NatsBus.
"""

from __future__ import annotations

import asyncio

import pytest

from forge.domain.messages import STREAMS, StreamSpec
from forge.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.bus import MessageBus
from forge.ports.fakes import MemoryBus, MemoryServer
from forge.ports.fakes._memory_streams import Stream

JOBS = StreamSpec(name="jobs", subjects=("jobs.>",), work_queue=True)
EVENTS = StreamSpec(name="events", subjects=("events.>",), work_queue=False)


async def with_worker(bus: MessageBus, *, ack_wait: float = 30.0, max_deliver: int = 5) -> None:
    await bus.ensure_streams([JOBS, EVENTS])
    await bus.ensure_consumer("jobs", "worker", filter_subject=None, ack_wait=ack_wait, max_deliver=max_deliver)


async def test_connections_share_one_server() -> None:
    publisher = MemoryBus()
    worker = publisher.connect()
    await with_worker(publisher)
    async with worker.subscribe("jobs.*") as sub:
        assert await publisher.publish("jobs.one", b"job")
        assert await sub.next(timeout=1.0) == b"job"  # a JetStream publish reaches core subscribers
    msgs = await worker.fetch("jobs", "worker", batch=5, timeout=1.0)
    assert [m.data for m in msgs] == [b"job"]
    await msgs[0].ack()
    assert await publisher.stream_bounds("jobs") == (2, 1)


async def test_a_waiting_fetch_gets_what_another_connection_publishes() -> None:
    server = MemoryServer()
    worker, publisher = server.connect(), server.connect()
    await with_worker(worker)
    fetching = asyncio.ensure_future(worker.fetch("jobs", "worker", batch=1, timeout=5.0))
    await asyncio.sleep(0.05)
    await publisher.publish("jobs.late", b"late")
    msgs = await asyncio.wait_for(fetching, 1.0)
    assert [m.data for m in msgs] == [b"late"]


async def test_stopped_server_is_unavailable_until_started_again() -> None:
    server = MemoryServer()
    bus = server.connect()
    await with_worker(bus)
    server.stop()
    with pytest.raises(ServiceUnavailableError):
        server.connect()
    for call in (bus.ping(), bus.publish("jobs.x", b""), bus.fetch("jobs", "worker", batch=1, timeout=1.0)):
        with pytest.raises(ServiceUnavailableError):
            await call
    server.start()
    await bus.ping()
    assert await bus.publish("jobs.x", b"kept")  # streams survive, like JetStream's file storage


async def test_close_ends_a_waiting_fetch_and_subscription() -> None:
    bus = MemoryBus()
    await with_worker(bus)
    fetching = asyncio.ensure_future(bus.fetch("jobs", "worker", batch=1, timeout=5.0))
    async with bus.subscribe("x.>") as sub:
        await asyncio.sleep(0.05)
        await bus.close()
        with pytest.raises(ServiceUnavailableError):
            await asyncio.wait_for(fetching, 1.0)
        with pytest.raises(ServiceUnavailableError):
            await sub.next(timeout=1.0)
        assert [p async for p in sub] == []
    await bus.close()  # twice is fine


async def test_stream_and_consumer_errors_match_nats() -> None:
    bus = MemoryBus()
    await with_worker(bus)
    with pytest.raises(ConflictError):  # retention cannot change to/from work queue
        await bus.ensure_streams([JOBS.model_copy(update={"work_queue": False})])
    with pytest.raises(InvalidInputError):
        await bus.ensure_streams([StreamSpec(name="more-jobs", subjects=("jobs.ci",), work_queue=True)])
    with pytest.raises(ConflictError):
        await bus.ensure_streams([EVENTS.model_copy(update={"subjects": ("events.>", "jobs.*")})])
    with pytest.raises(InvalidInputError):  # one consumer per subject on a work queue
        await bus.ensure_consumer("jobs", "other", filter_subject="jobs.ci", ack_wait=1.0, max_deliver=1)
    await bus.ensure_consumer("events", "a", filter_subject="events.>", ack_wait=1.0, max_deliver=1)
    await bus.ensure_consumer("events", "b", filter_subject="events.>", ack_wait=1.0, max_deliver=1)
    with pytest.raises(NotFoundError):
        await bus.ensure_consumer("nope", "worker", filter_subject=None, ack_wait=1.0, max_deliver=1)
    with pytest.raises(NotFoundError):
        await bus.fetch("jobs", "nobody", batch=1, timeout=0.1)
    with pytest.raises(NotFoundError):
        await bus.last_payload("nope", "x")
    with pytest.raises(ValueError, match="invalid stream name"):
        await bus.stream_bounds("a.b")
    with pytest.raises(ValueError, match="invalid batch size"):
        await bus.fetch("jobs", "worker", batch=0, timeout=1.0)


async def test_subject_and_payload_errors_match_nats() -> None:
    bus = MemoryBus()
    await with_worker(bus)
    for bad in ("", "jobs.a b"):
        with pytest.raises(InvalidInputError):
            await bus.publish(bad, b"")
    with pytest.raises(InvalidInputError):
        await bus.subscribe("a.>.b").__aenter__()
    with pytest.raises(InvalidInputError):
        await bus.publish("jobs.big", b"x" * (1024 * 1024 + 1))


async def test_stream_settings_follow_nats_bus() -> None:
    server = MemoryServer()
    await server.connect().ensure_streams(STREAMS)
    tasks, results, dlq = server.find("pipeline-tasks"), server.find("pipeline-results"), server.find("pipeline-dlq")
    assert tasks is not None
    assert results is not None
    assert dlq is not None
    assert (tasks.duplicate_window, tasks.max_age) == (7200.0, 0.0)
    assert (results.duplicate_window, results.max_age) == (120.0, 24 * 3600.0)
    assert dlq.max_age == 7 * 24 * 3600.0


def test_duplicates_are_forgotten_after_the_window_and_old_messages_expire() -> None:
    stream = Stream("s", ("s.>",), work_queue=False, duplicate_window=120.0, max_age=3600.0)
    assert stream.store("s.a", b"1", {"Nats-Msg-Id": "k"}, now=0.0) == (1, False)
    assert stream.store("s.a", b"2", {"Nats-Msg-Id": "k"}, now=119.0) == (1, True)
    assert stream.store("s.a", b"3", {"Nats-Msg-Id": "k"}, now=121.0) == (2, False)
    stream.expire(now=3600.5)
    assert list(stream.messages) == [2]


async def test_late_ack_of_an_exhausted_message_still_removes_it() -> None:
    bus = MemoryBus()
    await with_worker(bus, ack_wait=0.1, max_deliver=1)
    await bus.publish("jobs.slow", b"s")
    (msg,) = await bus.fetch("jobs", "worker", batch=1, timeout=1.0)
    assert await bus.fetch("jobs", "worker", batch=1, timeout=0.3) == []  # ack wait passed, no retry left
    assert await bus.stream_bounds("jobs") == (1, 1)
    await msg.ack()
    assert await bus.stream_bounds("jobs") == (2, 1)


async def test_a_message_takes_one_reply_but_any_number_of_heartbeats() -> None:
    bus = MemoryBus()
    await with_worker(bus)
    await bus.publish("jobs.one", b"1")
    (msg,) = await bus.fetch("jobs", "worker", batch=1, timeout=1.0)
    await msg.nak(delay=60.0)
    await msg.in_progress()
    for reply in (msg.ack(), msg.nak(), msg.term()):  # NatsBus: nats-py's MsgAlreadyAckdError
        with pytest.raises(ServiceUnavailableError):
            await reply


async def test_core_publish_is_stored_and_a_request_on_a_stream_gets_the_publish_ack() -> None:
    bus = MemoryBus()
    await bus.ensure_streams([EVENTS])
    await bus.respond("events.core", b"stored")
    assert await bus.last_payload("events", "events.*") == b"stored"
    assert await bus.request("events.req", b"r", timeout=1.0) == b'{"stream":"events","seq":2}'


async def test_testing_hook_exposes_the_reply_inbox() -> None:
    bus = MemoryBus()
    async with bus.subscribe("rpc.echo") as sub:
        asking = asyncio.ensure_future(bus.request("rpc.echo", b"hi", timeout=1.0))
        data, reply = await sub.testing_next_with_reply(timeout=1.0)
        assert data == b"hi"
        assert reply is not None
        assert reply.startswith("_INBOX.")
        await bus.respond(reply, b"ho")
        assert await asking == b"ho"

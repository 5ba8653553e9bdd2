"""StepEventRecorder on MemoryStore + MemoryBus: batches applied then acked, invalid events dropped, PostgreSQL down.

Each test has a discovered run with its executions (four steps); events are published as CI
workers publish them (``StepEventPublisher``) and the stream is read with ``bus.stream_bounds``:
a work-queue stream keeps a message until it is acked (or terminated).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

from forge.controller.step_events import EVENTS_CONSUMER, StepEventRecorder
from forge.domain.events import EVENTS_STREAM, StepEvent, event_subject
from forge.domain.messages import STREAMS
from forge.domain.status import Status
from forge.jobs.events import StepEventPublisher
from forge.ports import BusMessage
from forge.ports.fakes import MemoryBus

from .support import WITHIN, ObservedStore, Running, discovered_run, running, steps_of, until


@dataclass
class Setup:
    store: ObservedStore
    bus: MemoryBus
    recorder: StepEventRecorder
    run_id: UUID
    steps: dict[str, UUID]  # phase/project/step -> step id

    async def publish(self, *events: StepEvent) -> None:
        publisher = StepEventPublisher(self.bus)
        for event in events:
            await publisher.publish(event)

    def event(self, step: str, kind: str, attempt: int = 1, **fields: object) -> StepEvent:
        return StepEvent.model_validate(
            {"run_id": self.run_id, "step_id": self.steps[step], "attempt": attempt, "kind": kind, **fields}
        )

    async def waiting(self) -> int:
        """Messages still in the events stream (not acked)."""
        first, last = await self.bus.stream_bounds(EVENTS_STREAM)
        return last - first + 1

    async def fetch(self) -> list[BusMessage]:
        return await self.bus.fetch(EVENTS_STREAM, EVENTS_CONSUMER, batch=100, timeout=0.05)

    async def statuses(self) -> dict[str, Status]:
        return {step: status for step, (status, _) in (await steps_of(self.store, self.run_id)).items()}


@contextlib.asynccontextmanager
async def recorder_setup() -> AsyncIterator[Setup]:
    store = ObservedStore()
    bus = MemoryBus()
    await bus.ensure_streams(STREAMS)
    run = await discovered_run(store)
    assert run.discovery is not None
    executions = await store.create_executions(run.id, run.discovery)
    steps = {"/".join(key): step_id for key, step_id in executions.step_ids().items()}
    recorder = StepEventRecorder(executions=store, bus=bus, fetch_wait=0.02, ack_wait=30.0)
    await recorder.prepare()
    yield Setup(store, bus, recorder, run.id, steps)


@contextlib.asynccontextmanager
async def recording(s: Setup) -> AsyncIterator[Running]:
    async with running(s.recorder.run) as services:
        yield services


async def test_a_batch_across_steps_is_applied_in_one_transaction_then_acked() -> None:
    async with recorder_setup() as s:
        await s.publish(
            s.event("check/lib/lint", "started"),
            s.event("check/lib/lint", "success", exit_code=0),
            s.event("build/app/bundle", "started"),
            s.event("build/app/bundle", "failed", exit_code=2, message="exit code 2"),
            s.event("test/lib/unit", "started"),
        )
        messages = await s.fetch()
        assert len(messages) == 5
        await s.recorder.record(messages)
        assert await s.waiting() == 0  # every message acked
        assert [len(batch) for batch in s.store.applied] == [5]
        assert await s.statuses() == {
            "check/lib/lint": Status.SUCCESS,
            "build/app/bundle": Status.FAILED,
            "test/lib/unit": Status.RUNNING,
            "test/app/unit": Status.PENDING,
        }
        bundle = await s.store.get_step(s.steps["build/app/bundle"])
        assert (bundle.exit_code, bundle.attempts) == (2, 1)


async def test_the_recorder_applies_what_is_published_and_acks_it() -> None:
    async with recorder_setup() as s, recording(s) as recorder:
        await s.publish(s.event("check/lib/lint", "started"), s.event("test/app/unit", "success", exit_code=0))

        async def recorded() -> bool:
            return await s.waiting() == 0

        await recorder.until(recorded)
        assert (await s.statuses())["check/lib/lint"] is Status.RUNNING
        assert (await s.statuses())["test/app/unit"] is Status.SUCCESS


async def test_an_invalid_message_is_terminated_and_the_valid_ones_of_its_batch_are_applied() -> None:
    async with recorder_setup() as s:
        subject = event_subject(s.run_id)
        await s.publish(s.event("check/lib/lint", "started"))
        await s.bus.publish(subject, b"{not json")
        await s.bus.publish(subject, b'{"run_id": "x", "kind": "exploded"}')  # JSON, not a StepEvent
        await s.publish(s.event("check/lib/lint", "success", exit_code=0))
        messages = await s.fetch()
        assert len(messages) == 4
        await s.recorder.record(messages)
        assert await s.waiting() == 0  # the invalid ones terminated, the valid ones acked
        assert [len(batch) for batch in s.store.applied] == [2]
        assert (await s.statuses())["check/lib/lint"] is Status.SUCCESS


async def test_an_event_the_store_refuses_never_blocks_the_rest() -> None:
    """A valid ``StepEvent`` PostgreSQL cannot take (a NUL in its message) is a poison message too."""
    async with recorder_setup() as s:
        await s.publish(
            s.event("check/lib/lint", "started"),
            s.event("build/app/bundle", "failed", exit_code=1, message="bad \x00 byte"),
            s.event("check/lib/lint", "success", exit_code=0),
        )
        messages = await s.fetch()
        assert len(messages) == 3
        async with asyncio.timeout(WITHIN):
            await s.recorder.record(messages)
        assert (await s.statuses())["check/lib/lint"] is Status.SUCCESS
        assert await s.waiting() == 0


async def test_with_the_store_down_a_batch_waits_unacked_then_is_applied_exactly_once() -> None:
    async with recorder_setup() as s:
        await s.publish(
            s.event("check/lib/lint", "started"),
            s.event("check/lib/lint", "success", exit_code=0),
            s.event("test/lib/unit", "started"),
        )
        messages = await s.fetch()
        s.store.available = False
        recording_task = asyncio.create_task(s.recorder.record(messages))
        try:
            await until(lambda: s.store.apply_calls >= 5, task=recording_task)  # retried meanwhile
            assert await s.waiting() == 3  # nothing acked
            assert s.store.applied == []
            assert not recording_task.done()
            s.store.available = True
            async with asyncio.timeout(WITHIN):
                await recording_task
        finally:
            recording_task.cancel()
        assert await s.waiting() == 0
        assert [len(batch) for batch in s.store.applied] == [3]  # one transaction, once
        assert (await s.statuses())["check/lib/lint"] is Status.SUCCESS
        assert (await s.statuses())["test/lib/unit"] is Status.RUNNING
        lint = await s.store.get_step(s.steps["check/lib/lint"])
        assert lint.attempts == 1


async def test_with_the_store_down_the_running_recorder_keeps_the_events_until_it_is_back() -> None:
    async with recorder_setup() as s, recording(s) as recorder:
        s.store.available = False
        await s.publish(s.event("check/lib/lint", "started"), s.event("check/lib/lint", "failed", exit_code=1))
        await recorder.until(lambda: s.store.apply_calls >= 5)
        assert await s.waiting() == 2
        s.store.available = True

        async def recorded() -> bool:
            return await s.waiting() == 0

        await recorder.until(recorded)
        assert len(s.store.applied) == 1
        assert (await s.statuses())["check/lib/lint"] is Status.FAILED


async def test_caught_up_returns_only_after_the_events_published_before_it_are_applied() -> None:
    async with recorder_setup() as s, recording(s) as recorder:
        s.store.gate.clear()  # PostgreSQL is slow
        try:
            await s.publish(
                s.event("check/lib/lint", "started"),
                s.event("check/lib/lint", "success", exit_code=0),
                s.event("build/app/bundle", "started"),
            )
            barrier = asyncio.create_task(s.recorder.caught_up(poll=0.002))
            await recorder.until(lambda: s.store.apply_calls >= 1)  # the recorder holds the batch
            for _ in range(10):
                await asyncio.sleep(0.002)
                assert not barrier.done()
        finally:
            s.store.gate.set()
        async with asyncio.timeout(WITHIN):
            await barrier
        # the moment the barrier opens, the events are in the store
        assert (await s.statuses())["check/lib/lint"] is Status.SUCCESS
        assert (await s.statuses())["build/app/bundle"] is Status.RUNNING
        assert await s.waiting() == 0


async def test_caught_up_returns_at_once_when_nothing_is_waiting() -> None:
    async with recorder_setup() as s:
        async with asyncio.timeout(WITHIN):
            await s.recorder.caught_up()
        await s.publish(s.event("check/lib/lint", "started"))
        await s.recorder.record(await s.fetch())
        async with asyncio.timeout(WITHIN):
            await s.recorder.caught_up()

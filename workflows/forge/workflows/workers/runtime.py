"""The loop every worker type shares: pull, run, heartbeat, store the result, ack (DESIGN §6).

* A job is acked only after its result is stored in ``pipeline-results`` (and sent to a reply
  inbox when the publisher gave one), so a worker that dies mid-job loses nothing: JetStream
  redelivers the job after ``ack_wait``.
* While a handler runs, ``+WPI`` in-progress acks keep JetStream from redelivering it.
* ``PermanentError``: a failed result now. Anything else is retried with a delay until the
  last delivery; then the job goes to ``pipeline.dlq.<type>`` with its reason and a failed result.
* A job whose key already has a stored result is acked without running again (idempotency). Every
  delivery looks, not only redeliveries: a NATS server killed and restarted can forget a consumer's
  acks and delivery counts, and deliver a job it had already seen, with a count of 1, again.
* A handler can *settle* its job before its last side effects (``settle``): the job's result and
  what the handler needs to finish (``resume`` state) are stored on
  ``pipeline.results.<key>.settled``. A delivery that finds a settled outcome (its worker died
  after the step ended, before the result was stored) does not run the job again: the handler's
  ``resume`` finishes the side effects (a CI step's log and final event), then the settled result
  is stored and the job acked. The settled record is not the result: a dispatcher sees the result
  only once the final event is stored, which the controller's end-of-run barrier relies on.
* A job runs on one worker at a time: after those look-ups, the worker *claims* it on
  ``pipeline.results.<key>.claim`` with JetStream's expected last subject sequence (0 for a first
  claim), so of two deliveries of one job (a NATS restart lost the consumer's delivery state and
  delivered it again at once, to another worker) one claims it. The claim names the worker (an id
  per ``Worker``) and a lease (``ack_wait`` seconds, wall clock) that the heartbeat renews,
  expecting the claim's own last sequence. A delivery that finds another worker's live claim does
  not run the job: it keeps it in progress and looks again when that lease runs out (or after a
  heartbeat), until the result (or a settled outcome) is stored, or the claim went stale (its worker
  died), which it takes over, expecting the stale claim's sequence: of two takers one wins. A
  takeover looks for a stored result again before running. A worker that lost its claim (a renewal
  is refused: someone took it over after its lease ran out) stops the job and stores nothing,
  neither a settled outcome nor a result, and neither acks nor naks it: the new holder finishes it.
  Before it stores an outcome a worker renews a claim older than half a lease, so no one can have
  taken it over. A job retried after a failure is released first (a claim with an expired lease), so
  its retry waits for no lease.
* ``pipeline.cancel.<run>`` cancels that run's jobs: received live (core subscription), running
  jobs are cancelled (a CI step's process group is killed); kept in ``pipeline-cancels``, a job of
  a cancelled run pulled later is not started. Either way the job ends with a failed
  ``cancelled`` result. The stream is asked once per run per worker process: once asked while
  the live subscription is up, any later cancel of that run arrives live.
* ``delivery`` (a context variable) holds the JetStream delivery count of the job a handler runs
  (1 for a first delivery), so a handler can tell a redelivery (an earlier worker may have left
  partial output) from a first try without a ``Handler`` signature change.
* Every valid job is counted (``forge_worker_jobs_*`` by type and outcome) and runs in a ``job <type>``
  span, the child of its dispatcher's (``traceparent`` header) in the run's trace.
* Jobs are pulled in batches of up to the free slots, so a busy worker makes one pull request
  for many jobs. Streams are the process's to ensure once (``forge-worker`` does, at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import stamina
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.messages import (
    CANCEL_SUBJECTS,
    CANCELS_STREAM,
    DEFAULT_POOL,
    RESULT_INLINE_LIMIT,
    STREAM_OF,
    Job,
    JobError,
    JobType,
    Result,
    cancel_subject,
    pool_filter,
    result_subject,
)
from forge.errors import ConflictError, ForgeError, PermanentError, TransientError
from forge.jobs.dispatch import RESULTS_STREAM as STREAM_OF_RESULTS
from forge.jobs.dispatch import stored_result
from forge.observability.logs import current_run
from forge.observability.tracing import run_span
from forge.observability.worker import observe_job
from forge.ports import BusMessage, MessageBus, ObjectStore
from forge.retrying import transient
from forge.settings import WorkerSettings

__all__ = [
    "Claim",
    "Handler",
    "Resumable",
    "Settled",
    "Worker",
    "claim_subject",
    "consumer_name",
    "delivery",
    "settle",
    "settled_subject",
    "settles",
    "stored_settled",
]

log = logging.getLogger("forge.worker")


class _RunCancelledError(Exception):
    pass


class _ClaimLostError(Exception):
    """Another worker took the job's claim over (this one's lease ran out): store nothing, leave the job."""


Handler = Callable[[Job], Coroutine[Any, Any, dict[str, Any]]]
_CHECKED_RUNS = 10_000

#: The delivery count of the job the current handler runs (1: first delivery).
delivery: ContextVar[int] = ContextVar("delivery", default=1)
_STORE_FOR = 30.0  # seconds a settled outcome or a result is retried while NATS is unreachable


@runtime_checkable
class Resumable(Protocol):
    """A handler that can finish a settled job without running it again (``settle``)."""

    async def resume(self, job: Job, state: dict[str, Any]) -> None: ...


class Settled(BaseModel):
    """A job's outcome, stored before its handler's last side effects were done."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    result: Result
    resume: dict[str, Any] = Field(default_factory=dict, description="What the handler's resume needs")


def settled_subject(key: str) -> str:
    return f"{result_subject(key)}.settled"


def claim_subject(key: str) -> str:
    return f"{result_subject(key)}.claim"


class Claim(BaseModel):
    """Which worker runs a job, until when (wall clock) unless it renews the claim."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    worker: str
    expires: float = Field(description="Seconds since the epoch; 0: released")


@dataclass(slots=True)
class _Held:
    """A claim this worker holds: its subject, its last sequence and when it was last (re)published."""

    subject: str
    sequence: int
    renewed: float  # time.monotonic()


def _worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def stored_settled(bus: MessageBus, key: str) -> Settled | None:
    payload = await bus.last_payload(STREAM_OF_RESULTS, settled_subject(key))
    return None if payload is None else Settled.model_validate_json(payload)


@dataclass(frozen=True, slots=True)
class _Current:
    worker: Worker
    job: Job
    held: _Held | None


_current: ContextVar[_Current | None] = ContextVar("forge_worker_current", default=None)


def settles() -> bool:
    """Whether ``settle`` stores anything here: the handler runs under a worker and can resume."""
    current = _current.get()
    return current is not None and _resumer(current.worker.handler) is not None


async def settle(outcome: dict[str, Any] | PermanentError, resume: dict[str, Any]) -> None:
    """Store the outcome of the job the current handler runs (its result data, or the ``PermanentError`` it
    is about to raise) with the state its ``resume`` needs, before the handler's last side effects. A no-op
    unless ``settles()``. ``TransientError`` when NATS stays unreachable (the job is then retried)."""
    current = _current.get()
    if current is None or _resumer(current.worker.handler) is None:
        return
    await current.worker.settle(current.job, outcome, resume, held=current.held)


def _resumer(handler: object) -> Resumable | None:
    return handler if isinstance(handler, Resumable) else None


def consumer_name(job_type: JobType, pool: str = DEFAULT_POOL) -> str:
    """``<type>-consumer`` for the default pool (its name before pools), ``<type>-<pool>-consumer`` otherwise."""
    return f"{job_type.value}-consumer" if pool == DEFAULT_POOL else f"{job_type.value}-{pool}-consumer"


@dataclass
class Worker:
    job_type: JobType
    handler: Handler
    bus: MessageBus
    objects: ObjectStore
    settings: WorkerSettings
    _running: dict[UUID, set[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    _cancelled: set[UUID] = field(default_factory=set)
    _checked: OrderedDict[UUID, None] = field(default_factory=OrderedDict)  # not cancelled when asked
    _watching: asyncio.Event = field(default_factory=asyncio.Event)  # the live cancel subscription is up
    worker_id: str = field(default_factory=_worker_id)
    clock: Callable[[], float] = time.time  # the wall clock leases are read with
    _holding: set[str] = field(default_factory=set)  # keys of the jobs this worker runs now
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)  # ``run``'s stop

    @property
    def lease(self) -> float:
        """Seconds a claim lasts unless renewed: as long as JetStream waits for a +WPI before redelivering."""
        return self.settings.ack_wait

    @property
    def stream(self) -> str:
        return STREAM_OF[self.job_type]

    async def prepare(self) -> None:
        await self.bus.ensure_consumer(
            self.stream,
            consumer_name(self.job_type, self.settings.pool),
            filter_subject=pool_filter(self.job_type, self.settings.pool),  # this pool's jobs only
            ack_wait=self.settings.ack_wait,
            max_deliver=self.settings.max_deliver,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Pull and handle jobs until ``stop`` is set; running jobs finish first."""
        await self.prepare()
        self._stopping = stop
        slots = asyncio.Semaphore(self.settings.concurrency)
        log.info(
            "%s worker of pool %s ready on %s (concurrency %d)",
            self.job_type,
            self.settings.pool,
            self.stream,
            self.settings.concurrency,
        )
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(self._watch_cancels())
            while not stop.is_set():
                await slots.acquire()
                wanted = 1
                while wanted < self.settings.concurrency and not slots.locked():
                    await slots.acquire()  # a free slot: returns at once
                    wanted += 1
                try:
                    messages = await self.bus.fetch(
                        self.stream,
                        consumer_name(self.job_type, self.settings.pool),
                        batch=wanted,
                        timeout=self.settings.fetch_wait,
                    )
                except ForgeError as exc:
                    log.warning("fetch failed: %s", exc)
                    messages = []
                    await asyncio.sleep(self.settings.fetch_wait)
                for _ in range(wanted - len(messages)):
                    slots.release()
                for msg in messages:
                    tasks.create_task(self._guarded(msg, slots))
            watcher.cancel()

    async def _watch_cancels(self) -> None:
        while True:
            try:
                async with self.bus.subscribe(CANCEL_SUBJECTS) as cancels:
                    self._watching.set()
                    async for payload in cancels:
                        self._cancel(payload)
            except ForgeError as exc:
                log.warning("cancel requests are not received (%s); retrying", exc)
            self._watching.clear()  # cancels may have been missed: ask the stream again
            self._checked.clear()
            await asyncio.sleep(self.settings.fetch_wait)

    def _cancel(self, payload: bytes) -> None:
        try:
            run_id = UUID(payload.decode())
        except ValueError:
            log.warning("ignoring a malformed cancel request %r", payload[:100])
            return
        self._cancelled.add(run_id)
        for job in self._running.get(run_id, set()):
            log.info("cancelling a job of run %s", run_id)
            job.cancel()

    async def _guarded(self, msg: BusMessage, slots: asyncio.Semaphore) -> None:
        try:
            await self.handle(msg)
        except Exception:  # one job never takes the worker down; JetStream redelivers it
            log.exception("unexpected error while handling %s", msg.subject)
        finally:
            slots.release()

    async def handle(self, msg: BusMessage) -> None:
        try:
            job = Job.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._dead_letter(msg, f"invalid job envelope: {exc.error_count()} error(s): {exc.errors()[0]}")
            return
        # metrics, the job's span (a child of the dispatcher's, from the traceparent header) and the run in logs
        current_run.set(job.run_id)  # this task's context: each job is handled in its own task
        with (
            observe_job(job.type.value) as observed,
            run_span(
                f"job {job.type.value}",
                job.run_id,
                headers=msg.headers,
                kind=SpanKind.CONSUMER,
                attributes={
                    "forge.run_id": str(job.run_id),
                    "forge.job.key": job.key,
                    "forge.delivery": msg.num_delivered,
                },
            ),
        ):
            observed.outcome = await self._handle(msg, job)

    async def _handle(self, msg: BusMessage, job: Job) -> str:
        """Handle a valid job; its outcome for the metrics."""
        held: _Held | None = None
        waiting = False
        while True:
            done = await self._done_before(msg, job)
            if done is not None:
                return done
            if held is not None:  # taken over: nothing was stored meanwhile
                break
            held, first, wait = await self._claim(job)
            if first:  # nobody ever claimed it: nobody ran it
                break
            if held is None:  # another worker runs it: wait for its outcome, or for its lease to run out
                if not waiting:
                    log.info("job %s is claimed by another worker; waiting for its result", job.key)
                    waiting = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
                if self._stopping.is_set():  # not acked: JetStream delivers it again if its holder dies too
                    log.info("job %s left to the worker that holds it: this one stops", job.key)
                    return "left"
                with contextlib.suppress(ForgeError):
                    await msg.in_progress()
        assert held is not None
        self._holding.add(job.key)
        try:
            return await self._run(msg, job, held)
        except _ClaimLostError:
            log.warning("job %s was taken over by another worker; leaving it to that one", job.key)
            return "lost"
        finally:
            self._holding.discard(job.key)

    async def _done_before(self, msg: BusMessage, job: Job) -> str | None:
        """End a job that must not run (a stored result, a settled outcome, a cancelled run): its outcome."""
        if await stored_result(self.bus, job.key) is not None:  # one read; a settled record is looked up after
            log.info("job %s already has a result; acking the duplicate", job.key)
            await msg.ack()
            return "duplicate"
        settled = await self._settled(job)
        if settled is not None:
            return await self._resume(msg, job, settled)
        if await self._run_cancelled(job.run_id):
            log.info("job %s not started: run %s was cancelled", job.key, job.run_id)
            await self._finish(msg, job, _cancelled(job))
            return "cancelled"
        return None

    async def _run(self, msg: BusMessage, job: Job, held: _Held) -> str:
        last_delivery = msg.num_delivered >= self.settings.max_deliver
        delivery.set(msg.num_delivered)  # this task's context: each job is handled in its own task
        _current.set(_Current(self, job, held))
        try:
            data = await self._with_heartbeat(msg, job, self.handler(job), held)
        except _ClaimLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - settled below: cancelled, failed, or retried then dead-lettered
            return await self._settle_failure(msg, job, exc, last_delivery=last_delivery, held=held)
        await self._finish(msg, job, await self._result(job, data), held=held)
        return "success"

    def _claim_record(self, expires: float | None = None) -> bytes:
        until = self.clock() + self.lease if expires is None else expires
        return Claim(worker=self.worker_id, expires=until).model_dump_json().encode()

    async def _claim(self, job: Job) -> tuple[_Held | None, bool, float]:
        """Claim ``job``: (the claim, whether it is the job's first, 0); (None, False, seconds to wait before
        looking again) while another worker holds a live claim, or won the race to take a stale one over."""
        subject = claim_subject(job.key)
        try:  # the common case: never claimed; one publish
            sequence = await self.bus.publish_if_last(subject, self._claim_record(), last_sequence=0)
            return _Held(subject, sequence, time.monotonic()), True, 0.0
        except ConflictError:
            pass
        last = await self.bus.last_message(STREAM_OF_RESULTS, subject)
        expected = 0 if last is None else last.sequence
        if last is not None:
            left = self._lease_left(last.data, job.key)
            if left > 0:  # look again when it runs out (a dead holder's), or after a heartbeat
                return None, False, min(self.settings.heartbeat, left + 0.05)
        try:
            sequence = await self.bus.publish_if_last(subject, self._claim_record(), last_sequence=expected)
        except ConflictError:
            return None, False, self.settings.heartbeat
        log.info("job %s: took over a stale claim", job.key)
        return _Held(subject, sequence, time.monotonic()), False, 0.0

    def _lease_left(self, record: bytes, key: str) -> float:
        """Seconds a stored claim still holds the job (0: stale or malformed)."""
        try:
            claim = Claim.model_validate_json(record)
        except ValidationError:
            return 0.0
        if claim.worker == self.worker_id:  # this worker's: live while one of its tasks runs the job
            return self.settings.heartbeat if key in self._holding else 0.0
        return max(0.0, claim.expires - self.clock())

    async def _renew(self, held: _Held, *, expires: float | None = None) -> None:
        """Renew (or, with ``expires=0``, release) the claim; ``_ClaimLostError`` when another worker took it."""
        try:
            sequence = await self.bus.publish_if_last(
                held.subject, self._claim_record(expires), last_sequence=held.sequence
            )
        except ConflictError as exc:
            raise _ClaimLostError from exc
        held.sequence, held.renewed = sequence, time.monotonic()

    async def _confirm(self, held: _Held | None) -> None:
        """Before an outcome is stored: a claim older than half a lease is renewed (raises if it was lost)."""
        if held is not None and time.monotonic() - held.renewed > self.lease / 2:
            await _retried(lambda: self._renew(held))

    async def _release(self, held: _Held) -> None:
        """Let a retry of the job start at once, on any worker (best effort: a lease runs out anyway)."""
        with contextlib.suppress(ForgeError, _ClaimLostError):
            await self._renew(held, expires=0.0)

    async def settle(
        self,
        job: Job,
        outcome: dict[str, Any] | PermanentError,
        resume: dict[str, Any],
        *,
        held: _Held | None = None,
    ) -> None:
        """Store ``job``'s settled outcome (module ``settle`` is what a handler calls)."""
        if isinstance(outcome, dict):
            result = await self._result(job, outcome)
        else:
            result = _failure(job, outcome, permanent=True)
        record = Settled(result=result, resume=resume).model_dump_json().encode()
        await self._confirm(held)
        await _retried(lambda: self.bus.publish(settled_subject(job.key), record))

    async def _settled(self, job: Job) -> Settled | None:
        return await stored_settled(self.bus, job.key) if _resumer(self.handler) is not None else None

    async def _resume(self, msg: BusMessage, job: Job, settled: Settled) -> str:
        """Finish a job settled by a worker that died before it stored the result: no run again."""
        resumer = _resumer(self.handler)
        assert resumer is not None
        log.info("job %s was settled by a worker that stopped; finishing it without running it again", job.key)

        async def resume() -> dict[str, Any]:
            await resumer.resume(job, settled.resume)
            return {}

        try:
            await self._with_heartbeat(msg, job, resume())
        except Exception as exc:  # noqa: BLE001 - its side effects are retried; the step never runs again
            if msg.num_delivered < self.settings.max_deliver:
                log.warning("finishing the settled job %s failed, retrying: %s", job.key, exc)
                await msg.nak(delay=min(30.0, 2.0**msg.num_delivered))
                return "retried"
            log.error("finishing the settled job %s failed on its last delivery: %s", job.key, exc)
        await self._finish(msg, job, settled.result)
        return "resumed"

    async def _settle_failure(
        self, msg: BusMessage, job: Job, exc: Exception, *, last_delivery: bool, held: _Held
    ) -> str:
        """End a job whose handler raised: cancelled, failed now (permanent), or retried until the DLQ."""
        if isinstance(exc, _ClaimLostError):  # raised by ``settle``
            raise exc
        if isinstance(exc, _RunCancelledError):
            log.info("job %s cancelled with its run", job.key)
            await self._finish(msg, job, _cancelled(job), held=held)
            return "cancelled"
        if isinstance(exc, PermanentError):
            log.info("job %s failed permanently: %s", job.key, exc)
            await self._finish(msg, job, _failure(job, exc, permanent=True), held=held)
            return "failed"
        if not last_delivery:  # any other failure is retried, then dead-lettered
            delay = min(30.0, 2.0**msg.num_delivered)
            log.warning("job %s failed (delivery %d), retrying in %.0fs: %s", job.key, msg.num_delivered, delay, exc)
            await self._release(held)
            await msg.nak(delay=delay)
            return "retried"
        await self._confirm(held)
        reason = f"failed on delivery {msg.num_delivered} of {self.settings.max_deliver}: {exc}"
        await self._dead_letter(msg, reason, term=False)
        await self._finish(msg, job, _failure(job, exc, permanent=False))
        return "failed"

    async def _run_cancelled(self, run_id: UUID) -> bool:
        if run_id in self._cancelled:
            return True
        if run_id in self._checked:
            return False
        watching = self._watching.is_set()  # before asking: a cancel after the answer arrives live
        if await self.bus.last_payload(CANCELS_STREAM, cancel_subject(run_id)) is not None:
            self._cancelled.add(run_id)
            return True
        if watching and self._watching.is_set():
            self._checked[run_id] = None
            if len(self._checked) > _CHECKED_RUNS:
                self._checked.popitem(last=False)
        return False

    async def _with_heartbeat(
        self, msg: BusMessage, job: Job, work: Coroutine[Any, Any, dict[str, Any]], held: _Held | None = None
    ) -> dict[str, Any]:
        """Await ``work``, sending ``+WPI`` and renewing the claim every ``heartbeat`` seconds while it runs; a
        claim another worker took over stops ``work`` (``_ClaimLostError``)."""
        task = asyncio.ensure_future(work)
        running = self._running.setdefault(job.run_id, set())
        running.add(task)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.settings.heartbeat)
                if done:
                    if task.cancelled():
                        raise _RunCancelledError
                    return task.result()
                if held is not None:  # first: the lease then ends before JetStream's ack wait does
                    with contextlib.suppress(ForgeError):  # NATS unreachable: the lease runs on, renewed later
                        await self._renew(held)
                with contextlib.suppress(ForgeError):
                    await msg.in_progress()
        finally:
            task.cancel()
            running.discard(task)
            if not running:
                self._running.pop(job.run_id, None)

    async def _result(self, job: Job, data: dict[str, Any]) -> Result:
        body = json.dumps(data, separators=(",", ":")).encode()
        if len(body) <= RESULT_INLINE_LIMIT:
            return Result(job_id=job.id, key=job.key, success=True, data=data)
        key = f"pipeline-runs/{job.run_id}/results/{job.type.value}/{job.id}.json"
        await self.objects.put(key, body, content_type="application/json")
        return Result(job_id=job.id, key=job.key, success=True, object_key=key)

    async def _finish(self, msg: BusMessage, job: Job, result: Result, *, held: _Held | None = None) -> None:
        await self._confirm(held)
        payload = result.model_dump_json().encode()
        await _retried(lambda: self.bus.publish(result_subject(job.key), payload))
        reply_to = msg.headers.get("Forge-Reply-To")
        if reply_to:
            await self.bus.respond(reply_to, payload)
        await msg.ack()

    async def _dead_letter(self, msg: BusMessage, reason: str, *, term: bool = True) -> None:
        log.error("dead-lettering %s: %s", msg.subject, reason)
        headers = {"Forge-Reason": reason[:1000], "Forge-Subject": msg.subject}
        await self.bus.publish(f"pipeline.dlq.{self.job_type.value}", msg.data, headers=headers)
        if term:
            await msg.term()


async def _retried(publish: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Publish, retrying for a while when NATS is unreachable (a restart): ``TransientError`` after that."""
    try:  # the common case, without building a retry context
        await publish()
    except TransientError:
        pass
    else:
        return
    async for attempt in stamina.retry_context(
        on=transient, attempts=None, timeout=_STORE_FOR, wait_initial=0.1, wait_max=2.0
    ):
        with attempt:
            await publish()


def _cancelled(job: Job) -> Result:
    error = JobError(code="cancelled", message=f"run {job.run_id} was cancelled", permanent=True)
    return Result(job_id=job.id, key=job.key, success=False, error=error)


def _failure(job: Job, exc: Exception, *, permanent: bool) -> Result:
    if isinstance(exc, ForgeError):
        error = JobError(code=exc.code, message=exc.message, permanent=permanent, details=exc.details)
    else:
        error = JobError(code="internal", message=f"{type(exc).__name__}: {exc}", permanent=permanent)
    return Result(job_id=job.id, key=job.key, success=False, error=error)

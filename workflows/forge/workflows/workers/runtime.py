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
from forge.errors import ForgeError, PermanentError, TransientError
from forge.jobs.dispatch import RESULTS_STREAM as STREAM_OF_RESULTS
from forge.jobs.dispatch import stored_result
from forge.observability.logs import current_run
from forge.observability.tracing import run_span
from forge.observability.worker import observe_job
from forge.ports import BusMessage, MessageBus, ObjectStore
from forge.retrying import transient
from forge.settings import WorkerSettings

__all__ = [
    "Handler",
    "Resumable",
    "Settled",
    "Worker",
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


async def stored_settled(bus: MessageBus, key: str) -> Settled | None:
    payload = await bus.last_payload(STREAM_OF_RESULTS, settled_subject(key))
    return None if payload is None else Settled.model_validate_json(payload)


@dataclass(frozen=True, slots=True)
class _Current:
    worker: Worker
    job: Job


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
    await current.worker.settle(current.job, outcome, resume)


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
        last_delivery = msg.num_delivered >= self.settings.max_deliver
        delivery.set(msg.num_delivered)  # this task's context: each job is handled in its own task
        _current.set(_Current(self, job))
        try:
            data = await self._with_heartbeat(msg, job, self.handler(job))
        except Exception as exc:  # noqa: BLE001 - settled below: cancelled, failed, or retried then dead-lettered
            return await self._settle_failure(msg, job, exc, last_delivery=last_delivery)
        await self._finish(msg, job, await self._result(job, data))
        return "success"

    async def settle(self, job: Job, outcome: dict[str, Any] | PermanentError, resume: dict[str, Any]) -> None:
        """Store ``job``'s settled outcome (module ``settle`` is what a handler calls)."""
        if isinstance(outcome, dict):
            result = await self._result(job, outcome)
        else:
            result = _failure(job, outcome, permanent=True)
        record = Settled(result=result, resume=resume).model_dump_json().encode()
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

    async def _settle_failure(self, msg: BusMessage, job: Job, exc: Exception, *, last_delivery: bool) -> str:
        """End a job whose handler raised: cancelled, failed now (permanent), or retried until the DLQ."""
        if isinstance(exc, _RunCancelledError):
            log.info("job %s cancelled with its run", job.key)
            await self._finish(msg, job, _cancelled(job))
            return "cancelled"
        if isinstance(exc, PermanentError):
            log.info("job %s failed permanently: %s", job.key, exc)
            await self._finish(msg, job, _failure(job, exc, permanent=True))
            return "failed"
        if not last_delivery:  # any other failure is retried, then dead-lettered
            delay = min(30.0, 2.0**msg.num_delivered)
            log.warning("job %s failed (delivery %d), retrying in %.0fs: %s", job.key, msg.num_delivered, delay, exc)
            await msg.nak(delay=delay)
            return "retried"
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
        self, msg: BusMessage, job: Job, work: Coroutine[Any, Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """Await ``work``, sending ``+WPI`` every ``heartbeat`` seconds while it runs."""
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

    async def _finish(self, msg: BusMessage, job: Job, result: Result) -> None:
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


async def _retried(publish: Callable[[], Coroutine[Any, Any, bool]]) -> None:
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

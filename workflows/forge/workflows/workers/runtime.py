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
* A handler can *settle* its job before its last side effects (``settling``): a delivery that finds
  a settled outcome finishes the side effects with the handler's ``resume``, then stores the settled
  result and acks the job, without running it again.
* A job runs on one worker at a time: after those look-ups, the worker *claims* it with a lease that
  the heartbeat renews (``claims``). A delivery that finds another worker's live claim waits for its
  outcome, or takes a stale claim over; a worker that lost its claim stops the job and stores nothing.
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
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from forge.domain.messages import (
    CANCEL_SUBJECTS,
    CANCELS_STREAM,
    RESULT_INLINE_LIMIT,
    STREAM_OF,
    Job,
    JobError,
    JobType,
    Result,
    cancel_subject,
    result_subject,
)
from forge.errors import ForgeError, PermanentError
from forge.jobs.consumers import consumer_config, consumer_name, ensure_consumer
from forge.jobs.dispatch import stored_result
from forge.observability.logs import current_run
from forge.observability.tracing import run_span
from forge.observability.worker import observe_job
from forge.ports import BusMessage, MessageBus, ObjectStore
from forge.runtime import instance_id
from forge.settings import WorkerSettings
from forge.workflows.workers import settling
from forge.workflows.workers.claims import ClaimLostError, Claims, Held, retried
from forge.workflows.workers.settling import Settled, Settlements

__all__ = ["Handler", "Worker", "delivery"]

log = logging.getLogger("forge.worker")


class _RunCancelledError(Exception):
    pass


Handler = Callable[[Job], Coroutine[Any, Any, dict[str, Any]]]
_CHECKED_RUNS = 10_000

#: The delivery count of the job the current handler runs (1: first delivery).
delivery: ContextVar[int] = ContextVar("delivery", default=1)


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
    worker_id: str = field(default_factory=instance_id)
    clock: Callable[[], float] = time.time  # the wall clock leases are read with (given to ``claims``)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)  # ``run``'s stop
    claims: Claims = field(init=False, repr=False)
    settlements: Settlements = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.claims = Claims(self.bus, self.settings, self.worker_id, self.clock)
        self.settlements = Settlements(self.bus, self.handler)

    @property
    def stream(self) -> str:
        return STREAM_OF[self.job_type]

    async def prepare(self) -> None:
        """Create this pool's consumer, or bring the one the controller (or an older worker) made to this
        worker's ``ack_wait`` and ``max_deliver`` (``forge.jobs.consumers``)."""
        await ensure_consumer(self.bus, consumer_config(self.job_type, self.settings.pool, self.settings))

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
        held: Held | None = None
        waiting = False
        while True:
            done = await self._done_before(msg, job)
            if done is not None:
                return done
            if held is not None:  # taken over: nothing was stored meanwhile
                break
            held, first, wait = await self.claims.take(job.key)
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
        self.claims.holding.add(job.key)
        try:
            return await self._run(msg, job, held)
        except ClaimLostError:
            log.warning("job %s was taken over by another worker; leaving it to that one", job.key)
            return "lost"
        finally:
            self.claims.holding.discard(job.key)

    async def _done_before(self, msg: BusMessage, job: Job) -> str | None:
        """End a job that must not run (a stored result, a settled outcome, a cancelled run): its outcome."""
        if await stored_result(self.bus, job.key) is not None:  # one read; a settled record is looked up after
            log.info("job %s already has a result; acking the duplicate", job.key)
            await msg.ack()
            return "duplicate"
        settled = await self.settlements.find(job)
        if settled is not None:
            return await self._resume(msg, job, settled)
        if await self._run_cancelled(job.run_id):
            log.info("job %s not started: run %s was cancelled", job.key, job.run_id)
            await self._finish(msg, job, _cancelled(job))
            return "cancelled"
        return None

    async def _run(self, msg: BusMessage, job: Job, held: Held) -> str:
        last_delivery = msg.num_delivered >= self.settings.max_deliver
        delivery.set(msg.num_delivered)  # this task's context: each job is handled in its own task
        settling.running(self, job, held)  # what ``settling.settle`` stores for
        try:
            data = await self._with_heartbeat(msg, job, self.handler(job), held)
        except ClaimLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - settled below: cancelled, failed, or retried then dead-lettered
            return await self._settle_failure(msg, job, exc, last_delivery=last_delivery, held=held)
        await self._finish(msg, job, await self._result(job, data), held=held)
        return "success"

    async def settle(
        self,
        job: Job,
        outcome: dict[str, Any] | PermanentError,
        resume: dict[str, Any],
        *,
        held: Held | None = None,
    ) -> None:
        """Store ``job``'s settled outcome (``settling.settle`` is what a handler calls)."""
        if isinstance(outcome, dict):
            result = await self._result(job, outcome)
        else:
            result = _failure(job, outcome, permanent=True)
        await self.claims.confirm(held)
        await self.settlements.store(job, result, resume)

    async def _resume(self, msg: BusMessage, job: Job, settled: Settled) -> str:
        """Finish a job settled by a worker that died before it stored the result: no run again."""
        resumer = self.settlements.resumer
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
        self, msg: BusMessage, job: Job, exc: Exception, *, last_delivery: bool, held: Held
    ) -> str:
        """End a job whose handler raised: cancelled, failed now (permanent), or retried until the DLQ."""
        if isinstance(exc, ClaimLostError):  # raised by ``settle``
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
            await self.claims.release(held)
            await msg.nak(delay=delay)
            return "retried"
        await self.claims.confirm(held)
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
        self, msg: BusMessage, job: Job, work: Coroutine[Any, Any, dict[str, Any]], held: Held | None = None
    ) -> dict[str, Any]:
        """Await ``work``, sending ``+WPI`` and renewing the claim every ``heartbeat`` seconds while it runs; a
        claim another worker took over stops ``work`` (``ClaimLostError``)."""
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
                        await self.claims.renew(held)
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

    async def _finish(self, msg: BusMessage, job: Job, result: Result, *, held: Held | None = None) -> None:
        await self.claims.confirm(held)
        payload = result.model_dump_json().encode()
        await retried(lambda: self.bus.publish(result_subject(job.key), payload))
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


def _cancelled(job: Job) -> Result:
    error = JobError(code="cancelled", message=f"run {job.run_id} was cancelled", permanent=True)
    return Result(job_id=job.id, key=job.key, success=False, error=error)


def _failure(job: Job, exc: Exception, *, permanent: bool) -> Result:
    if isinstance(exc, ForgeError):
        error = JobError(code=exc.code, message=exc.message, permanent=permanent, details=exc.details)
    else:
        error = JobError(code="internal", message=f"{type(exc).__name__}: {exc}", permanent=permanent)
    return Result(job_id=job.id, key=job.key, success=False, error=error)

"""The dispatcher: publish one job, wait for its result (DESIGN §6).

The worker stores every final result on ``pipeline.results.<job key>`` in the ``pipeline-results``
stream, then sends it to the ``Forge-Reply-To`` inbox the job names (if any). Two ways to wait:

* :func:`dispatch`, for a process that sends one job (``forge-step`` in an Argo pod): subscribe to
  the result subject *before* looking for a stored result and before publishing, so a restarted
  dispatcher finds the earlier result instead of publishing twice, and no result can slip
  between the look-up and the subscription.
* :class:`Dispatcher`, for a process that sends many (the controller: discovery jobs and, with
  the local engine, every step): one inbox subscription for the life of the process, results
  routed to their waiters by job key. A job costs a stored-result look-up and a publish, not a
  subscription and its round trips. A job someone else already queued (a restart published it
  before) carries the other inbox, so its result is awaited on the result subject instead; and
  the stored result is looked up every ``recheck`` seconds, so a reply lost on the way (a NATS
  reconnect) costs a little time, never the job.

Both wrap a job in a ``dispatch <type>`` span of the run's trace and publish its ``traceparent`` in
the job's headers, so the worker's span is its child; the time to the result is
``forge_dispatch_duration_seconds`` (docs/operations.md). With tracing off (no OTLP endpoint) there
is no span and no ``traceparent``: a job costs one histogram observation (a cached child).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from types import TracebackType

from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from forge.domain.messages import Job, Result, result_subject
from forge.errors import ForgeError, TransientError
from forge.observability.bus import dispatch_duration
from forge.observability.logs import current_run
from forge.observability.tracing import inject, run_span, tracing_enabled
from forge.ports import MessageBus

__all__ = ["REPLY_HEADER", "RESULTS_STREAM", "Dispatcher", "dispatch", "stored_result"]

RESULTS_STREAM = "pipeline-results"
REPLY_HEADER = "Forge-Reply-To"
log = logging.getLogger("forge.dispatch")


async def stored_result(bus: MessageBus, key: str) -> Result | None:
    payload = await bus.last_payload(RESULTS_STREAM, result_subject(key))
    return None if payload is None else Result.model_validate_json(payload)


def _timed_out(job: Job, timeout: float) -> TransientError:
    return TransientError(f"no result for job {job.key} within {timeout:g}s", retry_after=5, code="dispatch_timeout")


@contextlib.contextmanager
def _observed(job: Job) -> Iterator[dict[str, str]]:
    """The job's span (current inside) and duration; yields the headers to publish it with (``traceparent``)."""
    started = time.perf_counter()
    run_token = current_run.set(job.run_id)
    headers: dict[str, str] = {}
    try:
        if not tracing_enabled():
            yield headers
            return
        attributes = {"forge.run_id": str(job.run_id), "forge.job.key": job.key, "forge.job.type": job.type.value}
        with run_span(f"dispatch {job.type.value}", job.run_id, kind=SpanKind.PRODUCER, attributes=attributes):
            inject(headers)
            yield headers
    finally:
        current_run.reset(run_token)
        dispatch_duration(job.type.value).observe(time.perf_counter() - started)


async def dispatch(bus: MessageBus, job: Job, *, timeout: float) -> Result:
    """Publish ``job`` (deduplicated by its key) and return its result; ``TransientError`` on timeout."""
    with _observed(job) as headers:
        return await _dispatch(bus, job, timeout=timeout, headers=headers)


async def _dispatch(bus: MessageBus, job: Job, *, timeout: float, headers: dict[str, str]) -> Result:
    async with bus.subscribe(result_subject(job.key)) as results:
        existing = await stored_result(bus, job.key)
        if existing is not None:
            log.info("job %s already has a result; not publishing again", job.key)
            return existing
        fresh = await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key, headers=headers or None)
        log.info("job %s %s on %s", job.key, "published" if fresh else "already queued", job.subject)
        try:
            payload = await results.next(timeout)
        except TimeoutError:
            late = await stored_result(bus, job.key)
            if late is not None:
                return late
            raise _timed_out(job, timeout) from None
    return Result.model_validate_json(payload)


class Dispatcher:
    """Many jobs over one inbox; use as ``async with Dispatcher(bus) as dispatcher``.

    The inbox is ``<inbox_prefix>.<random>``: a process whose NATS user may subscribe to its own inboxes
    only passes its connection's prefix (the controller: ``forge.jobs.nats_permissions.CONTROLLER_INBOX``)."""

    def __init__(self, bus: MessageBus, *, recheck: float = 10.0, inbox_prefix: str = "_INBOX.forge") -> None:
        self._bus = bus
        self._recheck = recheck
        self._inbox = f"{inbox_prefix}.{uuid.uuid4().hex}"
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._router: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def __aenter__(self) -> Dispatcher:
        self._router = asyncio.create_task(self._route())
        await self._listening.wait()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._router is not None:
            self._router.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._router

    async def dispatch(self, job: Job, *, timeout: float) -> Result:
        """Like :func:`dispatch`: the job's result, published at most once; ``TransientError`` on timeout."""
        with _observed(job) as headers:
            return await self._dispatch(job, timeout=timeout, headers=headers)

    async def _dispatch(self, job: Job, *, timeout: float, headers: dict[str, str]) -> Result:
        if job.key in self._waiting:  # a second waiter for the same job: share the slow path
            return await _dispatch(self._bus, job, timeout=timeout, headers=headers)
        reply = asyncio.get_running_loop().create_future()
        self._waiting[job.key] = reply
        try:
            existing = await stored_result(self._bus, job.key)
            if existing is not None:
                log.info("job %s already has a result; not publishing again", job.key)
                return existing
            data = job.model_dump_json().encode()
            fresh = await self._bus.publish(
                job.subject, data, msg_id=job.key, headers={**headers, REPLY_HEADER: self._inbox}
            )
            if not fresh:  # queued before, with another inbox
                log.info("job %s already queued; waiting on its result subject", job.key)
                return await _dispatch(self._bus, job, timeout=timeout, headers=headers)
            return await self._await(job, reply, timeout)
        finally:
            self._waiting.pop(job.key, None)

    async def _await(self, job: Job, reply: asyncio.Future[Result], timeout: float) -> Result:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(job, timeout)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(reply), min(left, self._recheck))
            stored = await stored_result(self._bus, job.key)
            if stored is not None:
                return stored

    async def _route(self) -> None:
        """Hand every reply on the inbox to the dispatch waiting for its job key."""
        while True:
            try:
                async with self._bus.subscribe(self._inbox) as replies:
                    self._listening.set()
                    async for payload in replies:
                        self._deliver(payload)
            except ForgeError as exc:  # waiters fall back to the stored result meanwhile
                log.warning("dispatcher inbox lost (%s); subscribing again", exc)
                await asyncio.sleep(1.0)

    def _deliver(self, payload: bytes) -> None:
        try:
            result = Result.model_validate_json(payload)
        except ValidationError:
            log.warning("ignoring a malformed reply on %s", self._inbox)
            return
        waiter = self._waiting.get(result.key)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

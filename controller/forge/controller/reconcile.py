"""The one reconcile loop every reconciler runs on: claim → act → requeue with capped backoff.

A reconciler says which runs it should act on (``claim`` new ones, ``resume`` those a previous
controller left, ``interrupts``: runs to start over because something outside changed them) and
what acting means (``reconcile``, idempotent: it reads the run again and
carries on from wherever it is). The loop runs one task per run and decides what an error means:

* ``TransientError`` (PostgreSQL, NATS, S3 or Argo unavailable, a timeout): logged and retried
  with exponential backoff capped at ``backoff_max`` (or the error's ``retry_after``) for as long
  as it takes. A transient error never fails a run.
* ``PermanentError``: the run fails with the error's message and ``code``.
* Anything else is a bug: logged with its traceback, and the run fails with
  ``code="internal"`` and the exception named, instead of being left stuck.

Failing a run goes through the reconciler's ``fail`` and is itself retried on transient errors.

Each ``reconcile`` call is timed and traced (``reconcile <name>`` in the run's trace, the parent of
the jobs it dispatches), and its errors are counted by kind (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import stamina
from opentelemetry.trace import Span, Status, StatusCode

from forge.controller.reconcilers.run_tasks import RunTasks, idle
from forge.errors import ForgeError, PermanentError, TransientError
from forge.observability.controller import RECONCILE_DURATION, RECONCILE_ERRORS
from forge.observability.logs import current_run
from forge.observability.tracing import parent_for, tracer
from forge.retrying import transient

__all__ = ["ReconcileLoop", "Reconciler"]


class Reconciler(Protocol):
    name: str

    async def resume(self) -> Sequence[UUID]:
        """Runs a previous controller was acting on (read once at start)."""

    async def claim(self) -> Sequence[UUID]:
        """New runs to act on, each handed to one controller."""

    async def interrupts(self) -> Sequence[UUID]:
        """Runs whose current ``reconcile`` must be cancelled and started over (say, a cancel request)."""

    async def reconcile(self, run_id: UUID) -> None:
        """Take the run as far as it goes now; raise to have the loop retry or fail it."""

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        """End the run as failed because of ``error``."""


@dataclass
class ReconcileLoop:
    reconciler: Reconciler
    poll_interval: float = 0.5
    backoff_max: float = 10.0

    @property
    def _log(self) -> logging.Logger:
        return logging.getLogger(f"forge.controller.{self.reconciler.name}")

    async def run(self, stop: asyncio.Event) -> None:
        """Act on resumed and claimed runs until ``stop``; their tasks are cancelled then."""
        interrupted: set[UUID] = set()
        async with asyncio.TaskGroup() as group:
            runs = RunTasks(group)
            for run_id in await self._retrying("resume", self.reconciler.resume):
                runs.start(run_id, self.drive(run_id))
            while not stop.is_set():
                try:
                    claimed = await self.reconciler.claim()
                    interrupts = await self.reconciler.interrupts()
                except TransientError as exc:
                    self._log.warning("cannot claim work: %s", exc)
                    claimed, interrupts = [], []
                for run_id in claimed:
                    runs.start(run_id, self.drive(run_id))
                interrupted &= set(interrupts)
                for run_id in interrupts:
                    if run_id in interrupted and runs.active(run_id):
                        continue  # already started over; let it finish
                    interrupted.add(run_id)
                    await runs.cancel(run_id)
                    runs.start(run_id, self.drive(run_id))
                if not claimed:
                    await idle(stop, self.poll_interval)
            runs.cancel_all()

    async def drive(self, run_id: UUID) -> None:
        """``reconcile`` the run until it returns; transient errors are retried, others fail the run."""
        current_run.set(run_id)  # this run's own task: its log records name it
        name = self.reconciler.name
        failure: ForgeError | None = None
        async for attempt in self._attempts():
            with attempt, self._observed(run_id) as span:
                try:
                    await self.reconciler.reconcile(run_id)
                except TransientError as exc:
                    RECONCILE_ERRORS.labels(name, "transient").inc()
                    self._log.warning("run %s: %s; retrying", run_id, exc)
                    raise
                except PermanentError as exc:
                    RECONCILE_ERRORS.labels(name, "permanent").inc()
                    failure = exc
                except Exception as exc:  # noqa: BLE001 - a bug must fail its run, never leave it stuck
                    RECONCILE_ERRORS.labels(name, "internal").inc()
                    self._log.exception("run %s: unexpected error", run_id)
                    failure = ForgeError(f"internal error: {type(exc).__name__}: {exc}", code="internal")
                if failure is not None:
                    span.set_status(Status(StatusCode.ERROR, failure.message))
        if failure is None:
            return
        self._log.error("run %s failed: %s", run_id, failure)
        try:
            async for attempt in self._attempts():
                with attempt:
                    await self.reconciler.fail(run_id, failure)
        except Exception:  # noqa: BLE001 - one run's trouble never takes the loop (and other runs) down
            self._log.exception("run %s: recording its failure failed; it is retried on the next start", run_id)

    @contextlib.contextmanager
    def _observed(self, run_id: UUID) -> Iterator[Span]:
        """One reconcile call: its duration, and its span in the run's trace (the parent of the jobs it dispatches)."""
        started = time.perf_counter()
        try:
            with tracer().start_as_current_span(
                f"reconcile {self.reconciler.name}",
                context=parent_for(run_id),
                attributes={"forge.run_id": str(run_id), "forge.reconciler": self.reconciler.name},
            ) as span:
                yield span
        finally:
            RECONCILE_DURATION.labels(self.reconciler.name).observe(time.perf_counter() - started)

    async def _retrying(self, what: str, call: _Call) -> Sequence[UUID]:
        async for attempt in self._attempts():
            with attempt:
                try:
                    return await call()
                except TransientError as exc:
                    self._log.warning("%s: %s; retrying", what, exc)
                    raise
        raise AssertionError("unreachable: attempts are unbounded")

    def _attempts(self) -> AsyncIterator[stamina.Attempt]:
        attempts = stamina.retry_context(
            on=transient, attempts=None, timeout=None, wait_initial=0.2, wait_max=self.backoff_max
        )
        return aiter(attempts)


class _Call(Protocol):
    async def __call__(self) -> Sequence[UUID]: ...

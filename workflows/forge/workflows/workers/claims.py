"""A job runs on one worker at a time: the worker *claims* it, with a lease, before it runs it.

* After its look-ups (a stored result, a settled outcome, a cancelled run), the worker claims the job
  on ``pipeline.results.<key>.claim`` with JetStream's expected last subject sequence
  (``MessageBus.publish_if_last``; 0 for a first claim), so of two deliveries of one job (a NATS
  restart lost the consumer's delivery state and delivered it again at once, to another worker) one
  claims it.
* The claim names the worker (an id per ``Worker``) and a lease (``ack_wait`` seconds, wall clock)
  that the heartbeat renews, expecting the claim's own last sequence.
* A delivery that finds another worker's live claim does not run the job: it keeps it in progress
  and looks again when that lease runs out (or after a heartbeat), until the result (or a settled
  outcome) is stored, or the claim went stale (its worker died), which it takes over, expecting the
  stale claim's sequence (``MessageBus.last_message``): of two takers one wins. A takeover looks for
  a stored result again before running.
* A worker that lost its claim (a renewal is refused: someone took it over after its lease ran out)
  stops the job and stores nothing, neither a settled outcome nor a result, and neither acks nor
  naks it: the new holder finishes it (``ClaimLostError``).
* Before it stores an outcome a worker renews a claim older than half a lease (``Claims.confirm``),
  so no one can have taken it over. A job retried after a failure is released first (a claim with
  an expired lease), so its retry waits for no lease.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import stamina
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.messages import result_subject
from forge.errors import ConflictError, ForgeError, TransientError
from forge.jobs.dispatch import RESULTS_STREAM as STREAM_OF_RESULTS
from forge.ports import MessageBus
from forge.retrying import transient
from forge.settings import WorkerSettings

__all__ = ["Claim", "ClaimLostError", "Claims", "Held", "claim_subject", "retried"]

log = logging.getLogger("forge.worker")

_STORE_FOR = 30.0  # seconds a settled outcome, a result or a claim's renewal is retried while NATS is unreachable


class ClaimLostError(Exception):
    """Another worker took the job's claim over (this one's lease ran out): store nothing, leave the job."""


class Claim(BaseModel):
    """Which worker runs a job, until when (wall clock) unless it renews the claim."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    worker: str
    expires: float = Field(description="Seconds since the epoch; 0: released")


def claim_subject(key: str) -> str:
    return f"{result_subject(key)}.claim"


@dataclass(slots=True)
class Held:
    """A claim this worker holds: its subject, its last sequence and when it was last (re)published."""

    subject: str
    sequence: int
    renewed: float  # time.monotonic()


@dataclass
class Claims:
    """The claims of one worker's jobs: taken, renewed, confirmed before an outcome is stored, released."""

    bus: MessageBus
    settings: WorkerSettings
    worker_id: str
    clock: Callable[[], float] = time.time  # the wall clock leases are read with
    holding: set[str] = field(default_factory=set)  # keys of the jobs this worker runs now

    @property
    def lease(self) -> float:
        """Seconds a claim lasts unless renewed: as long as JetStream waits for a +WPI before redelivering."""
        return self.settings.ack_wait

    def _record(self, expires: float | None = None) -> bytes:
        until = self.clock() + self.lease if expires is None else expires
        return Claim(worker=self.worker_id, expires=until).model_dump_json().encode()

    async def take(self, key: str) -> tuple[Held | None, bool, float]:
        """Claim job ``key``: (the claim, whether it is the job's first, 0); (None, False, seconds to wait before
        looking again) while another worker holds a live claim, or won the race to take a stale one over."""
        subject = claim_subject(key)
        try:  # the common case: never claimed; one publish
            sequence = await self.bus.publish_if_last(subject, self._record(), last_sequence=0)
            return Held(subject, sequence, time.monotonic()), True, 0.0
        except ConflictError:
            pass
        last = await self.bus.last_message(STREAM_OF_RESULTS, subject)
        expected = 0 if last is None else last.sequence
        if last is not None:
            left = self._lease_left(last.data, key)
            if left > 0:  # look again when it runs out (a dead holder's), or after a heartbeat
                return None, False, min(self.settings.heartbeat, left + 0.05)
        try:
            sequence = await self.bus.publish_if_last(subject, self._record(), last_sequence=expected)
        except ConflictError:
            return None, False, self.settings.heartbeat
        log.info("job %s: took over a stale claim", key)
        return Held(subject, sequence, time.monotonic()), False, 0.0

    def _lease_left(self, record: bytes, key: str) -> float:
        """Seconds a stored claim still holds the job (0: stale or malformed)."""
        try:
            claim = Claim.model_validate_json(record)
        except ValidationError:
            return 0.0
        if claim.worker == self.worker_id:  # this worker's: live while one of its tasks runs the job
            return self.settings.heartbeat if key in self.holding else 0.0
        return max(0.0, claim.expires - self.clock())

    async def renew(self, held: Held, *, expires: float | None = None) -> None:
        """Renew (or, with ``expires=0``, release) the claim; ``ClaimLostError`` when another worker took it."""
        try:
            sequence = await self.bus.publish_if_last(held.subject, self._record(expires), last_sequence=held.sequence)
        except ConflictError as exc:
            raise ClaimLostError from exc
        held.sequence, held.renewed = sequence, time.monotonic()

    async def confirm(self, held: Held | None) -> None:
        """Before an outcome is stored: a claim older than half a lease is renewed (raises if it was lost)."""
        if held is not None and time.monotonic() - held.renewed > self.lease / 2:
            await retried(lambda: self.renew(held))

    async def release(self, held: Held) -> None:
        """Let a retry of the job start at once, on any worker (best effort: a lease runs out anyway)."""
        with contextlib.suppress(ForgeError, ClaimLostError):
            await self.renew(held, expires=0.0)


async def retried(publish: Callable[[], Coroutine[Any, Any, object]]) -> None:
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

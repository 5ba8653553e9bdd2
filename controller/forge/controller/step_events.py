"""Step events → PostgreSQL: the controller is the only writer of execution state (DESIGN §6).

Workers publish step lifecycle events on ``pipeline.events.<run>``; this consumer pulls them in
batches (as many as are waiting, up to ``batch``), applies each batch in one transaction
(``ExecutionStore.apply_step_events``) and acks the batch only after it committed. So:

* the write rate is bounded by transactions, not by events: under load batches grow;
* PostgreSQL down delays records but never drops or falsifies them: the batch is retried with
  capped backoff (its messages kept alive with ``+WPI``), and anything not acked comes back;
* an event that is not a valid ``StepEvent``, or one the store refuses, is logged and terminated,
  never blocking the rest (a refused batch is applied again one event at a time).

:meth:`StepEventRecorder.caught_up` is the barrier the execution reconciler passes before it ends
a run: every event published before the call has been applied. Workers publish a step's final
event before its job's result, so once the workflow has seen every result, the barrier means
every outcome is in PostgreSQL and ``finish_run`` only settles steps that really never ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import stamina
from prometheus_client import Counter
from pydantic import ValidationError

from forge.domain.entities import ArtifactType, Trigger
from forge.domain.events import EVENTS_CONSUMER, EVENTS_STREAM, EVENTS_SUBJECTS, PublishedRelease, StepEvent
from forge.errors import ForgeError, PermanentError, TransientError
from forge.observability.controller import RELEASES_RECORDED, STEP_EVENTS_APPLIED
from forge.ports import BusMessage, ExecutionStore, MessageBus
from forge.ports.store import NewRelease, NewReleaseArtifact, ReleaseStore
from forge.retrying import transient

__all__ = ["EVENTS_CONSUMER", "StepEventRecorder", "new_release"]

log = logging.getLogger("forge.controller.events")


@dataclass
class StepEventRecorder:
    executions: ExecutionStore
    bus: MessageBus
    releases: ReleaseStore | None = None
    """Records the release a release step pushed (its ``success`` event carries it), before the step's
    outcome: a run that ends successfully has its releases recorded."""
    batch: int = 512
    fetch_wait: float = 1.0
    ack_wait: float = 30.0
    backoff_max: float = 5.0

    async def prepare(self) -> None:
        await self.bus.ensure_consumer(
            EVENTS_STREAM,
            EVENTS_CONSUMER,
            filter_subject=EVENTS_SUBJECTS,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # never give up on an event: it is the record of what a step did
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Record events until ``stop``; a batch being written is finished first."""
        async for attempt in self._attempts():
            with attempt:
                await self.prepare()
        while not stop.is_set():
            try:
                messages = await self.bus.fetch(
                    EVENTS_STREAM, EVENTS_CONSUMER, batch=self.batch, timeout=self.fetch_wait
                )
            except TransientError as exc:
                log.warning("cannot fetch step events: %s", exc)
                await asyncio.sleep(self.fetch_wait)
                continue
            if messages:
                await self.record(messages)

    async def record(self, messages: list[BusMessage]) -> None:
        """Apply one batch (retrying while PostgreSQL is unavailable), then ack it."""
        valid: list[BusMessage] = []
        events: list[StepEvent] = []
        for msg in messages:
            try:
                events.append(StepEvent.model_validate_json(msg.data))
            except ValidationError as exc:
                log.error("dropping an invalid step event on %s: %s", msg.subject, exc.errors()[0])
                with contextlib.suppress(ForgeError):
                    await msg.term()
            else:
                valid.append(msg)
        try:
            await self._apply(events, valid)
        except PermanentError as exc:  # one event the store refuses: apply them one by one
            log.warning("a batch of %d step event(s) was refused (%s); applying one at a time", len(events), exc)
            for msg, event in zip(valid, events, strict=True):
                try:
                    await self._apply([event], [msg])
                except PermanentError as refused:
                    log.error("dropping step event %s: %s", event.key, refused)
                    with contextlib.suppress(ForgeError):
                        await msg.term()
                else:
                    with contextlib.suppress(ForgeError):
                        await msg.ack()
            return
        for msg in valid:
            with contextlib.suppress(ForgeError):  # not acked: redelivered, and applying twice is a no-op
                await msg.ack()

    async def _apply(self, events: list[StepEvent], messages: list[BusMessage]) -> None:
        """Apply ``events`` in one transaction, retrying while the store is unavailable."""
        async for attempt in self._attempts():
            with attempt:
                try:
                    await self._record_releases(events)
                    await self.executions.apply_step_events(events)
                    for event in events:
                        _applied(event.kind).inc()
                except TransientError as exc:
                    log.warning("cannot record %d step event(s) yet: %s", len(events), exc)
                    await _keep_alive(messages)
                    raise

    async def _record_releases(self, events: list[StepEvent]) -> None:
        """Idempotent per (repository, project, commit): a batch applied again records nothing twice."""
        if self.releases is None:
            return
        for event in events:
            published = event.release
            if published is None or event.kind != "success":
                continue
            release, created = await self.releases.record_release(new_release(published, event.run_id))
            if created:
                RELEASES_RECORDED.inc()
                log.info(
                    "release %s/%s #%d recorded: %s",
                    release.repository,
                    release.project,
                    release.number,
                    release.oci_ref,
                )

    def _attempts(self) -> AsyncIterator[stamina.Attempt]:
        return aiter(stamina.retry_context(on=transient, attempts=None, timeout=None, wait_max=self.backoff_max))

    async def caught_up(self, *, poll: float = 0.02) -> None:
        """Return once every event published before this call has been applied and acked."""
        _, last = await self.bus.stream_bounds(EVENTS_STREAM)
        while (await self.bus.stream_bounds(EVENTS_STREAM))[0] <= last:  # noqa: ASYNC110 - remote state
            await asyncio.sleep(poll)


_APPLIED: dict[str, Counter] = {}  # STEP_EVENTS_APPLIED's child per kind: .labels() once, not per event


def _applied(kind: str) -> Counter:
    child = _APPLIED.get(kind)
    if child is None:
        child = _APPLIED[kind] = STEP_EVENTS_APPLIED.labels(kind)
    return child


async def _keep_alive(messages: list[BusMessage]) -> None:
    for msg in messages:
        with contextlib.suppress(ForgeError):
            await msg.in_progress()


def new_release(published: PublishedRelease, run_id: UUID | None) -> NewRelease:
    return NewRelease(
        repository=published.repository,
        project=published.project,
        commit_sha=published.commit_sha,
        oci_ref=published.oci_ref,
        oci_digest=published.oci_digest,
        trigger=Trigger(published.trigger),
        created_by=published.created_by,
        run_id=run_id,
        branch=published.branch,
        tag=published.tag,
        artifacts=tuple(
            NewReleaseArtifact(
                name=a.name,
                type=ArtifactType(a.type),
                tracking_ref=a.tracking_ref,
                tracking_digest=a.tracking_digest,
                published=tuple(a.published),
            )
            for a in published.artifacts
        ),
    )

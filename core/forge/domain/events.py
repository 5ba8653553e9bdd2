"""Step lifecycle events: how workers tell the controller what a step is doing (DESIGN §6).

Workers publish them on ``pipeline.events.<run id>`` (the ``pipeline-events`` stream); the
controller is the only process that turns them into execution state in PostgreSQL. An event is
idempotent by (step, attempt, kind): its :attr:`StepEvent.key` is the ``Nats-Msg-Id``, so a
redelivered job that reports again within the dedupe window is dropped by JetStream, and one
that reports later is a no-op for the controller.

Kinds, in the order one attempt produces them::

    started    the attempt began (status running)
    retrying   the attempt failed and Argo runs another (status stays running, exit code recorded)
    success    the step succeeded (final)
    failed     the last attempt failed (final)

A short step may report only its final event: ``started`` is implied by it.

:func:`advance` is the one rule for what an event does to a step; the controller applies it in
stream order. Events that cannot apply any more (a step already final, an older attempt) are
dropped, never errors: they are late copies of something already recorded or superseded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.status import Status

__all__ = [
    "EVENTS_CONSUMER",
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "EventKind",
    "PublishedArtifact",
    "PublishedRelease",
    "StepEvent",
    "StepState",
    "advance",
    "event_subject",
]

EVENTS_STREAM = "pipeline-events"
EVENTS_SUBJECTS = "pipeline.events.>"
#: The controller's durable consumer of ``pipeline-events`` (``StepEventRecorder``), the only one.
EVENTS_CONSUMER = "events-consumer"

EventKind = Literal["started", "retrying", "success", "failed"]

_STATUS_OF: dict[str, Status] = {
    "started": Status.RUNNING,
    "retrying": Status.RUNNING,
    "success": Status.SUCCESS,
    "failed": Status.FAILED,
}


def event_subject(run_id: UUID) -> str:
    return f"pipeline.events.{run_id}"


class PublishedArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["container", "binary", "archive"]
    tracking_ref: str
    tracking_digest: str
    published: list[dict[str, Any]] = Field(default_factory=list, description="publisher, type, location")


class PublishedRelease(BaseModel):
    """A Release OCI artifact pushed by a release job: what the controller records as a Release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str
    project: str
    commit_sha: str
    oci_ref: str = Field(description="<registry>/<owner>/<repo>/<project>@sha256:...")
    oci_digest: str
    trigger: Literal["push", "tag", "manual"]
    branch: str | None = None
    tag: str | None = None
    created_by: str
    artifacts: list[PublishedArtifact] = Field(default_factory=list)


class StepEvent(BaseModel):
    """One thing that happened to one attempt of one step execution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    run_id: UUID
    step_id: UUID = Field(description="The StepExecution")
    attempt: int = Field(ge=1, description="1 for the first attempt")
    kind: EventKind
    exit_code: int | None = None
    logs_key: str | None = None
    message: str | None = Field(None, max_length=4000)
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = Field(None, description="When the attempt began (for events other than started)")
    release: PublishedRelease | None = Field(None, description="On the success of a release step: what it pushed")

    @property
    def status(self) -> Status:
        """The step status this event moves the step to."""
        return _STATUS_OF[self.kind]

    @property
    def key(self) -> str:
        """Idempotency key: one event per (step, attempt, kind)."""
        return f"{self.step_id}.{self.attempt}.{self.kind}"


@dataclass(frozen=True, slots=True)
class StepState:
    """What the execution store keeps of a step that events change."""

    status: Status
    attempts: int = 0
    exit_code: int | None = None
    logs_key: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


def advance(state: StepState, event: StepEvent) -> StepState | None:
    """The step after ``event``, or None when the event changes nothing.

    A final step never changes; an event of an earlier attempt than the one recorded is stale.
    A final event of a step still ``pending`` is applied whole (the step started and ended).
    """
    if state.status.is_final or event.attempt < state.attempts:
        return None
    if event.kind == "started" and state.status is Status.RUNNING and event.attempt == state.attempts:
        return None  # a repeat
    final = event.status.is_final
    newer = event.attempt > state.attempts  # a new attempt forgets the last one's exit code
    new = replace(
        state,
        status=event.status,
        attempts=max(state.attempts, event.attempt),
        exit_code=event.exit_code if event.exit_code is not None or newer else state.exit_code,
        logs_key=event.logs_key or state.logs_key,
        message=event.message if event.message is not None else state.message,
        started_at=state.started_at or event.started_at or event.at,
        completed_at=event.at if final else None,
    )
    return None if new == state else new

"""The log and lifecycle events of a step the worker does itself, without a step process: a release,
or an artifact that is already published. Same log key and events as a CI step, so the run, the
progress view and ``forge logs`` show it like any other step."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from forge.domain.events import EventKind, PublishedRelease, StepEvent
from forge.domain.messages import Job
from forge.jobs.events import StepEventPublisher
from forge.logs import LogWriter
from forge.ports import ObjectStore

__all__ = ["StepReport"]


@dataclass
class StepReport:
    objects: ObjectStore
    events: StepEventPublisher | None
    job: Job
    step_id: UUID | None
    attempt: int
    """1 for the first attempt."""
    key: str
    """The step's log key."""
    began: datetime = field(default_factory=lambda: datetime.now(UTC))
    _log: LogWriter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._log = LogWriter(self.objects, self.key)

    async def write(self, line: str) -> None:
        await self._log.write(f"forge: {line}\n".encode())

    async def succeeded(self, *, release: PublishedRelease | None = None) -> None:
        await self._log.close()
        await self._publish("success", release=release)

    async def failed(self, message: str) -> None:
        await self.write(message)
        await self._log.close()
        await self._publish("failed", message=message)

    async def _publish(
        self, kind: EventKind, *, message: str | None = None, release: PublishedRelease | None = None
    ) -> None:
        if self.events is None or self.step_id is None:
            return
        await self.events.publish(
            StepEvent(
                run_id=self.job.run_id,
                step_id=self.step_id,
                attempt=self.attempt,
                kind=kind,
                exit_code=0 if kind == "success" else None,
                logs_key=self.key,
                message=message[:4000] if message else None,
                started_at=self.began,
                release=release,
            )
        )

"""A handler can *settle* its job before its last side effects: a delivery after a crash finishes them, no run again.

* ``settle`` stores the job's result and what the handler needs to finish (``resume`` state) on
  ``pipeline.results.<key>.settled`` (a ``Settled`` record), before the handler's last side effects.
* A delivery that finds a settled outcome (its worker died after the step ended, before the result
  was stored) does not run the job again: the handler's ``resume`` (``Resumable``) finishes the side
  effects (a CI step's log and final event), then the settled result is stored and the job acked.
* The settled record is not the result: a dispatcher sees the result only once the final event is
  stored, which the controller's end-of-run barrier relies on.
* Only a ``Resumable`` handler settles (``settles``); a worker whose handler is not looks for no
  settled record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.messages import Job, Result, result_subject
from forge.errors import PermanentError
from forge.jobs.dispatch import RESULTS_STREAM as STREAM_OF_RESULTS
from forge.ports import MessageBus
from forge.workflows.workers.claims import Held, retried

__all__ = [
    "Resumable",
    "Settled",
    "Settlements",
    "resumer",
    "running",
    "settle",
    "settled_subject",
    "settles",
    "stored_settled",
]


@runtime_checkable
class Resumable(Protocol):
    """A handler that can finish a settled job without running it again (``settle``)."""

    async def resume(self, job: Job, state: dict[str, Any]) -> None: ...


def resumer(handler: object) -> Resumable | None:
    return handler if isinstance(handler, Resumable) else None


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
class Settlements:
    """The settled outcomes of one worker's jobs: none unless its handler is ``Resumable``."""

    bus: MessageBus
    handler: object

    @property
    def resumer(self) -> Resumable | None:
        return resumer(self.handler)

    async def find(self, job: Job) -> Settled | None:
        """``job``'s settled outcome, looked up only when the handler can resume it."""
        return await stored_settled(self.bus, job.key) if self.resumer is not None else None

    async def store(self, job: Job, result: Result, resume: dict[str, Any]) -> None:
        """Store ``job``'s settled outcome (the worker confirms its claim first), retried while NATS is unreachable."""
        record = Settled(result=result, resume=resume).model_dump_json().encode()
        await retried(lambda: self.bus.publish(settled_subject(job.key), record))


class _Settling(Protocol):
    """What ``settle`` needs of the worker running the current job (``runtime.Worker``)."""

    settlements: Settlements

    async def settle(
        self, job: Job, outcome: dict[str, Any] | PermanentError, resume: dict[str, Any], *, held: Held | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Current:
    worker: _Settling
    job: Job
    held: Held | None


_current: ContextVar[_Current | None] = ContextVar("forge_worker_current", default=None)


def running(worker: _Settling, job: Job, held: Held | None) -> None:
    """Make ``job``, run by ``worker`` under claim ``held``, the one this task's handler settles."""
    _current.set(_Current(worker, job, held))


def settles() -> bool:
    """Whether ``settle`` stores anything here: the handler runs under a worker and can resume."""
    current = _current.get()
    return current is not None and current.worker.settlements.resumer is not None


async def settle(outcome: dict[str, Any] | PermanentError, resume: dict[str, Any]) -> None:
    """Store the outcome of the job the current handler runs (its result data, or the ``PermanentError`` it
    is about to raise) with the state its ``resume`` needs, before the handler's last side effects. A no-op
    unless ``settles()``. ``TransientError`` when NATS stays unreachable (the job is then retried)."""
    current = _current.get()
    if current is None or current.worker.settlements.resumer is None:
        return
    await current.worker.settle(current.job, outcome, resume, held=current.held)

"""The dispatcher: publish one job, wait for its result (DESIGN §6).

The worker stores every final result on ``pipeline.results.<job key>`` in the ``pipeline-results``
stream. The dispatcher subscribes to that subject *before* it looks for a stored result and
before it publishes, so a restarted dispatcher finds the earlier result instead of publishing
twice, and no result can slip between the look-up and the subscription.
"""

from __future__ import annotations

import logging

from forge.domain.messages import Job, Result, result_subject
from forge.errors import TransientError
from forge.ports import MessageBus

__all__ = ["RESULTS_STREAM", "dispatch", "stored_result"]

RESULTS_STREAM = "pipeline-results"
log = logging.getLogger("forge.dispatch")


async def stored_result(bus: MessageBus, key: str) -> Result | None:
    payload = await bus.last_payload(RESULTS_STREAM, result_subject(key))
    return None if payload is None else Result.model_validate_json(payload)


async def dispatch(bus: MessageBus, job: Job, *, timeout: float) -> Result:
    """Publish ``job`` (deduplicated by its key) and return its result; ``TransientError`` on timeout."""
    async with bus.subscribe(result_subject(job.key)) as results:
        existing = await stored_result(bus, job.key)
        if existing is not None:
            log.info("job %s already has a result; not publishing again", job.key)
            return existing
        fresh = await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key)
        log.info("job %s %s on %s", job.key, "published" if fresh else "already queued", job.subject)
        try:
            payload = await results.next(timeout)
        except TimeoutError:
            late = await stored_result(bus, job.key)
            if late is not None:
                return late
            raise TransientError(
                f"no result for job {job.key} within {timeout:.0f}s", retry_after=5, code="dispatch_timeout"
            ) from None
    return Result.model_validate_json(payload)

"""Commit statuses on the source host (GitHub) as runs move; failures never block a run.

Only runs that came from the source host (trigger push, pull_request or tag) are reported:
``forge run`` on a local folder has no commit on GitHub to decorate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from forge.domain.entities import PipelineRun, Trigger
from forge.domain.status import Status
from forge.errors import ForgeError
from forge.ports import SourceHost

__all__ = ["CommitStatuses"]

log = logging.getLogger("forge.controller.commit_status")

_STATES: dict[Status, tuple[str, str]] = {
    Status.PENDING: ("pending", "queued"),
    Status.RUNNING: ("pending", "running"),
    Status.SUCCESS: ("success", "all affected steps passed"),
    Status.FAILED: ("failure", "failed"),
    Status.CANCELLED: ("error", "cancelled"),
}


@dataclass(frozen=True, slots=True)
class CommitStatuses:
    host: SourceHost | None
    context: str
    public_url: str

    async def report(self, run: PipelineRun, *, detail: str | None = None) -> None:
        """Post the run's status on its commit; a failure is logged, never raised."""
        if self.host is None or run.trigger is Trigger.MANUAL or run.status not in _STATES:
            return
        state, description = _STATES[run.status]
        if run.status is Status.FAILED and run.error:
            description = f"failed: {run.error.splitlines()[0]}"
        if detail:
            description = f"{description}: {detail}"
        try:
            await self.host.set_commit_status(
                run.repository,
                run.commit_sha,
                state=state,
                context=self.context,
                description=description,
                target_url=f"{self.public_url.rstrip('/')}/v1/runs/{run.id}",
            )
        except ForgeError as exc:
            log.warning("run %s: commit status %s not posted: %s", run.id, state, exc)

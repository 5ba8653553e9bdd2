"""Job envelopes for tests of the bus, the dispatcher and the workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from forge.domain.messages import DEFAULT_POOL, DiscoveryPayload, Job, JobType

__all__ = ["discovery_job"]


def discovery_job(
    clone_url: str = "https://git.example.com/acme/mono.git",
    commit_sha: str = "ab" * 20,
    *,
    branch: str | None = "main",
    base_sha: str | None = None,
    pool: str = DEFAULT_POOL,
    deadline: timedelta = timedelta(minutes=1),
) -> Job:
    """A discovery job of a new run of ``acme/mono`` in ``pool``."""
    run = uuid4()
    return Job(
        key=f"discovery.{run}",
        type=JobType.DISCOVERY,
        run_id=run,
        repository="acme/mono",
        commit_sha=commit_sha,
        payload=DiscoveryPayload(clone_url=clone_url, branch=branch, base_sha=base_sha),
        deadline=datetime.now(UTC) + deadline,
        pool=pool,
    )

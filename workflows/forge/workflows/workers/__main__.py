"""``forge-worker TYPE…``: JetStream pull workers for one or more job types in one process; the
composition root of worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence

from forge.adapters._breakers import on_state_change
from forge.adapters.k8s_secrets import secret_provider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.oras_registry import OrasRegistry
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.domain.messages import STREAMS, JobType
from forge.jobs.nats_permissions import inbox_prefix
from forge.observability.breakers import record_breaker_state
from forge.runtime import configure_logging, load_settings, run_service, service_parser
from forge.settings import Settings
from forge.workflows.workers.registry import HANDLERS, WorkerDeps
from forge.workflows.workers.runtime import Worker

__all__ = ["build", "main"]


@contextlib.asynccontextmanager
async def build(settings: Settings, job_types: Sequence[JobType]) -> AsyncIterator[list[Worker]]:
    """Connect the adapters one worker process shares and build a ``Worker`` per job type."""
    # replies on the pool's own inboxes: what a per-pool NATS user may subscribe to (forge.jobs.nats_permissions)
    prefix = inbox_prefix(settings.worker.pool)
    bus = await NatsBus.from_settings(settings.nats, inbox_prefix=prefix)
    try:
        await bus.ensure_streams(STREAMS)  # once per process
        async with MinioObjectStore.from_settings(settings.objects) as objects:
            await objects.ensure_bucket()
            deps = WorkerDeps(
                settings=settings,
                bus=bus,
                objects=objects,
                mirrors=Pygit2Mirrors.from_settings(settings.git),  # FORGE_GIT__*: the pool's source credentials
                secrets=secret_provider(settings),
                registry=OrasRegistry.from_settings(settings.registry),
            )
            yield [
                Worker(job_type=t, handler=HANDLERS[t](deps), bus=bus, objects=objects, settings=settings.worker)
                for t in job_types
            ]
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    parser = service_parser("forge-worker", "Run Catalyst Forge workers")
    parser.add_argument(
        "types", nargs="+", metavar="TYPE", choices=sorted(t.value for t in HANDLERS), help="job types to serve"
    )
    args = parser.parse_args(argv)
    job_types = list(dict.fromkeys(JobType(t) for t in args.types))
    configure_logging(f"forge-worker-{'-'.join(t.value for t in job_types)}")
    on_state_change(record_breaker_state)  # circuit breaker transitions in /metrics
    settings = load_settings(parser.prog)

    async def serve(stop: asyncio.Event) -> None:
        async with build(settings, job_types) as workers, asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker.run(stop))

    return run_service(serve)


if __name__ == "__main__":
    sys.exit(main())

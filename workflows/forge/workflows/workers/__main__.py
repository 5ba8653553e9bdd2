"""``forge-worker {discovery,ci}``: a JetStream pull worker; the composition root of worker processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import httpx

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.httpx_reporter import HttpStatusReporter
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.domain.messages import JobType
from forge.runtime import configure_logging, run_service
from forge.settings import Settings
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.discovery import DiscoveryHandler
from forge.workflows.workers.runtime import Handler, Worker

__all__ = ["build", "main"]

WORKER_TYPES = {"discovery": JobType.DISCOVERY, "ci": JobType.CI}


@contextlib.asynccontextmanager
async def build(settings: Settings, job_type: JobType) -> AsyncIterator[Worker]:
    """Choose and connect the adapters of one worker process."""
    bus = await NatsBus.connect(settings.nats.url, replicas=settings.nats.replicas)
    try:
        async with (
            MinioObjectStore.from_settings(settings.objects) as objects,
            httpx.AsyncClient(base_url=settings.api.public_url, timeout=10.0) as api,
        ):
            await objects.ensure_bucket()
            mirrors = Pygit2Mirrors(settings.git.cache_dir)
            handler: Handler
            if job_type is JobType.CI:
                handler = CiHandler(
                    mirrors=mirrors,
                    objects=objects,
                    secrets=EnvSecretProvider(settings.ci.secrets_dir),
                    settings=settings.ci,
                    status=HttpStatusReporter(api),
                )
            else:
                handler = DiscoveryHandler(mirrors=mirrors, objects=objects)
            yield Worker(job_type=job_type, handler=handler, bus=bus, objects=objects, settings=settings.worker)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forge-worker", description="Run a Catalyst Forge worker")
    parser.add_argument("type", choices=sorted(WORKER_TYPES), help="job type this worker pulls")
    args = parser.parse_args(argv)
    configure_logging(f"forge-worker-{args.type}")
    settings = Settings()

    async def serve(stop: asyncio.Event) -> None:
        async with build(settings, WORKER_TYPES[args.type]) as worker:
            await worker.run(stop)

    return run_service(serve)


if __name__ == "__main__":
    sys.exit(main())

"""``forge-controller``: the composition root of the controller process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.loop import ControllerServices, run_controller
from forge.domain.messages import STREAMS
from forge.runtime import configure_logging, run_service
from forge.settings import Settings

__all__ = ["build", "main"]


@contextlib.asynccontextmanager
async def build(settings: Settings) -> AsyncIterator[ControllerServices]:
    store = await PostgresStore.connect(settings.database.url, min_size=1, max_size=settings.database.pool_max)
    try:
        bus = await NatsBus.connect(settings.nats.url, replicas=settings.nats.replicas)
        try:
            await bus.ensure_streams(STREAMS)
            async with MinioObjectStore.from_settings(settings.objects) as objects:
                yield ControllerServices(store=store, bus=bus, objects=objects)
        finally:
            await bus.close()
    finally:
        await store.close()


def main() -> int:
    configure_logging("forge-controller")
    settings = Settings()

    async def serve(stop: asyncio.Event) -> None:
        async with build(settings) as services:
            await services.store.migrate()
            await run_controller(services, settings, stop)

    return run_service(serve)


if __name__ == "__main__":
    sys.exit(main())

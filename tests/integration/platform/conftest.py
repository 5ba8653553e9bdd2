"""The API over ASGI and the discovery worker in-process, on the shared real-service fixtures (../conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.api.app import create_app
from forge.domain.messages import STREAMS, JobType
from forge.workflows.workers.discovery import DiscoveryHandler
from forge.workflows.workers.runtime import Worker

from .support import FAST, Counting, api_services, auth_headers


@pytest.fixture
async def client(store: PostgresStore, bus: NatsBus, objects: MinioObjectStore) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in this event loop over ASGI (so asyncpg's pool stays on one loop)."""
    app = create_app(api_services(store, bus, objects))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's precise ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test", headers=auth_headers()) as client:
        yield client


@pytest.fixture
def handler(tmp_path: Path, objects: MinioObjectStore) -> Counting:
    return Counting(DiscoveryHandler(mirrors=Pygit2Mirrors(tmp_path / "cache"), objects=objects))


@pytest.fixture
def start_worker(
    bus: NatsBus, objects: MinioObjectStore, handler: Counting
) -> Callable[[], contextlib.AbstractAsyncContextManager[Worker]]:
    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[Worker]:
        worker = Worker(job_type=JobType.DISCOVERY, handler=handler, bus=bus, objects=objects, settings=FAST)
        await bus.ensure_streams(STREAMS)  # what forge-worker does once at start
        await worker.prepare()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            try:
                yield worker
            finally:
                stop.set()

    return start

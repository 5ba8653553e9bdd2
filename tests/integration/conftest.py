"""Connected adapters on real services, shared by the integration tests that need several of them.

Each test gets its own NATS server (20 ms to start) so streams and consumers never leak between
tests, its own PostgreSQL database and its own bucket. Folders with a compliance suite (bus,
objects, store) define their own fixtures of the same names.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.settings import ObjectStoreSettings
from forge.testing.postgres import create_database_async


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = start_nats(tmp_path / "nats")
    yield proc
    proc.stop()


@pytest.fixture
async def bus(own_nats: ServiceProcess) -> AsyncIterator[NatsBus]:
    bus = await NatsBus.connect(own_nats.url)
    yield bus
    await bus.close()


@pytest.fixture
async def store(postgres_server: ServiceProcess) -> AsyncIterator[PostgresStore]:
    dsn = await create_database_async(postgres_server.url, f"t_{uuid.uuid4().hex[:16]}")
    store = await PostgresStore.connect(dsn, min_size=1, max_size=5)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def object_settings(s3_server: ServiceProcess) -> ObjectStoreSettings:
    return ObjectStoreSettings(
        endpoint=s3_server.url,
        access_key=s3_server.extra["access_key"],
        secret_key=SecretStr(s3_server.extra["secret_key"]),
        bucket=f"b-{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
async def objects(object_settings: ObjectStoreSettings) -> AsyncIterator[MinioObjectStore]:
    async with MinioObjectStore.from_settings(object_settings) as store:
        await store.ensure_bucket()
        yield store

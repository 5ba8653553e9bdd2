"""Real NATS (one server per test), S3 and git for the CI worker tests; a CI worker run in-process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.domain.messages import JobType
from forge.ports import StatusReporter
from forge.settings import CiSettings, ObjectStoreSettings
from forge.testing.nats import start_nats
from forge.testing.postgres import create_database_async
from forge.testing.process import ServiceProcess
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.runtime import Worker

from .support import FAST

StartWorker = Callable[..., contextlib.AbstractAsyncContextManager[CiHandler]]


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


@pytest.fixture
def ci_settings(tmp_path: Path) -> CiSettings:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    return CiSettings(work_dir=tmp_path / "work", secrets_dir=secrets, kill_grace=1.0, log_interval=0.2)


@pytest.fixture
def start_worker(tmp_path: Path, bus: NatsBus, objects: MinioObjectStore, ci_settings: CiSettings) -> StartWorker:
    """``async with start_worker(environ=..., status=...) as handler:`` runs a CI worker until the block ends."""

    @contextlib.asynccontextmanager
    async def start(
        *, environ: Mapping[str, str] | None = None, status: StatusReporter | None = None
    ) -> AsyncIterator[CiHandler]:
        handler = CiHandler(
            mirrors=Pygit2Mirrors(tmp_path / "cache"),
            objects=objects,
            secrets=EnvSecretProvider(ci_settings.secrets_dir, environ={}),
            settings=ci_settings,
            status=status,
            environ=environ,
        )
        worker = Worker(job_type=JobType.CI, handler=handler, bus=bus, objects=objects, settings=FAST)
        await worker.prepare()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            try:
                yield handler
            finally:
                stop.set()

    return start

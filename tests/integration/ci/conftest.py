"""Real NATS (one server per test), S3 and git for the CI worker tests; a CI worker run in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.domain.messages import STREAMS, JobType
from forge.jobs.events import StepEventPublisher
from forge.ports import GitMirrors, ObjectStore
from forge.settings import CiSettings
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.runtime import Worker

from .support import FAST

StartWorker = Callable[..., contextlib.AbstractAsyncContextManager[CiHandler]]


@pytest.fixture
def ci_settings(tmp_path: Path) -> CiSettings:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # no sandbox: these tests watch the step from the host through files it writes outside its checkout
    # (test_sandbox.py runs steps in the sandbox and checks the host instead)
    return CiSettings(work_dir=tmp_path / "work", secrets_dir=secrets, kill_grace=1.0, log_interval=0.2, sandbox="off")


@pytest.fixture
def start_worker(tmp_path: Path, bus: NatsBus, objects: MinioObjectStore, ci_settings: CiSettings) -> StartWorker:
    """``async with start_worker(environ=..., events=...) as handler:`` runs a CI worker until the block ends.

    ``store`` and ``mirrors`` replace the handler's object store and git mirrors (counting wrappers).
    """

    @contextlib.asynccontextmanager
    async def start(
        *,
        environ: Mapping[str, str] | None = None,
        events: StepEventPublisher | None = None,
        store: ObjectStore | None = None,
        mirrors: GitMirrors | None = None,
    ) -> AsyncIterator[CiHandler]:
        handler = CiHandler(
            mirrors=mirrors or Pygit2Mirrors(tmp_path / "cache"),
            objects=store or objects,
            secrets=EnvSecretProvider(ci_settings.secrets_dir, environ={}),
            settings=ci_settings,
            events=events,
            environ=environ,
        )
        worker = Worker(job_type=JobType.CI, handler=handler, bus=bus, objects=objects, settings=FAST)
        await bus.ensure_streams(STREAMS)
        await worker.prepare()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            try:
                yield handler
            finally:
                stop.set()

    return start

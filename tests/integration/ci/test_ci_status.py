"""Step events published by the CI worker reach PostgreSQL through the controller's recorder.

The worker, the recorder, NATS, PostgreSQL, S3 and git are real (in-process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.step_events import StepEventRecorder
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.messages import STREAMS
from forge.domain.status import Status
from forge.jobs.dispatch import dispatch
from forge.jobs.events import StepEventPublisher
from forge.logs import LogReader, log_key
from forge.ports.store import NewRepository, NewRun, RunExecutions

from .conftest import StartWorker
from .support import ci_job, standard_repo


@pytest.fixture
async def recorder(store: PostgresStore, bus: NatsBus) -> AsyncIterator[StepEventRecorder]:
    """The controller's step event recorder, running until the test ends."""
    await bus.ensure_streams(STREAMS)
    recorder = StepEventRecorder(executions=store, bus=bus, fetch_wait=0.2)
    stop = asyncio.Event()
    task = asyncio.ensure_future(recorder.run(stop))
    yield recorder
    stop.set()
    await task


async def _executions(store: PostgresStore, url: str, sha: str) -> RunExecutions:
    await store.register_repository(NewRepository("acme/mono", url))
    run, _ = await store.create_run(NewRun(repository="acme/mono", commit_sha=sha))
    await store.claim_discovery(limit=10)
    found = DiscoveryResult(
        commit=sha,
        base=None,
        projects=[
            DiscoveredProject(
                name="svc",
                path="svc",
                config_blob="0" * 40,
                phases={"test": ["unit"]},
                steps=[DiscoveredStep(phase="test", name="unit", action="run", target="true", timeout_seconds=30)],
            )
        ],
        affected=[AffectedProject(project="svc", reasons=["changed"])],
        phase_groups=[PhaseGroup(group=0, phases=["test"])],
    )
    await store.record_discovery(run.id, found, f"d/{run.id}")
    return await store.create_executions(run.id, found)


async def test_successful_step_is_reported_running_then_success(
    tmp_path: Path, store: PostgresStore, recorder: StepEventRecorder, start_worker: StartWorker, bus: NatsBus
) -> None:
    url = str(tmp_path / "src.git")
    sha = standard_repo(Path(url))
    ex = await _executions(store, url, sha)
    step_id = ex.step_id("test", "svc", "unit")
    job = ci_job(url, sha, "echo ok", run_id=ex.run_id, step_execution_id=step_id)
    async with start_worker(events=StepEventPublisher(bus)):
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    await recorder.caught_up()  # the worker published the outcome before the result
    step = await store.get_step(step_id)
    assert step.status == Status.SUCCESS
    assert (step.exit_code, step.attempts) == (0, 1)
    assert step.logs_key == log_key(ex.run_id, "test", "svc", "unit")


async def test_failed_attempt_stays_running_until_the_last_attempt_fails(
    tmp_path: Path,
    store: PostgresStore,
    recorder: StepEventRecorder,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    url = str(tmp_path / "src.git")
    sha = standard_repo(Path(url))
    ex = await _executions(store, url, sha)
    step_id = ex.step_id("test", "svc", "unit")
    async with start_worker(events=StepEventPublisher(bus)):
        first = await dispatch(
            bus, ci_job(url, sha, "exit 3", run_id=ex.run_id, step_execution_id=step_id, retries=1), timeout=60
        )
        assert not first.success
        await recorder.caught_up()
        step = await store.get_step(step_id)
        assert (step.status, step.exit_code, step.attempts) == (Status.RUNNING, 3, 1)

        last = await dispatch(
            bus,
            ci_job(url, sha, "exit 4", run_id=ex.run_id, step_execution_id=step_id, retries=1, attempt=1),
            timeout=60,
        )
    assert not last.success
    assert last.error is not None
    assert last.error.details["attempt"] == 2
    await recorder.caught_up()
    step = await store.get_step(step_id)
    assert (step.status, step.exit_code, step.attempts) == (Status.FAILED, 4, 2)
    assert step.logs_key is not None
    log = (await LogReader(objects).read(step.logs_key))[0].decode()
    assert log.index("attempt 1 of 2") < log.index("exited with code 3") < log.index("attempt 2 of 2")
    assert log.index("attempt 2 of 2") < log.index("exited with code 4")

"""Worker pools on real NATS JetStream and PostgreSQL: a repository registered in pool ``b`` has its run's jobs
(built the real way: its WorkflowTemplate's step commands, parsed as ``forge-step dispatch`` parses them) run
only by the worker started in pool ``b``; a pool nobody serves keeps its jobs queued, visible as its own lag,
untouched by other pools' workers, until a worker of that pool starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4, uuid5

import pytest

from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.messages import STREAMS, CiPayload, Job, JobType
from forge.embedded.process import ServiceProcess
from forge.errors import TransientError
from forge.jobs.consumers import consumer_name
from forge.jobs.dispatch import Dispatcher
from forge.observability.bus import CONSUMER_LAG, sample_streams
from forge.ports import ObjectStore
from forge.ports.store import NewRepository
from forge.settings import TimeoutSettings, WorkerSettings
from forge.workflows.steps.entry import parse_job
from forge.workflows.templates import STEP_COMMAND, TemplateSpec, build_template
from forge.workflows.workers.runtime import Worker

TASKS = "pipeline-tasks"


def _settings(pool: str) -> WorkerSettings:
    return WorkerSettings(pool=pool, concurrency=4, ack_wait=5.0, heartbeat=1.0, max_deliver=2, fetch_wait=0.1)


@contextlib.asynccontextmanager
async def _worker(url: str, pool: str, seen: list[tuple[str, Job]]) -> AsyncIterator[Worker]:
    """A CI worker of ``pool`` on its own connection (its own process in production), recording its jobs."""
    bus = await NatsBus.connect(url)

    async def handler(job: Job) -> dict[str, Any]:
        seen.append((pool, job))
        return {"pool": pool}

    worker = Worker(
        job_type=JobType.CI, handler=handler, bus=bus, objects=cast(ObjectStore, object()), settings=_settings(pool)
    )
    await worker.prepare()
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(stop))
            yield worker
            stop.set()
    finally:
        await bus.close()


def _discovery(commit: str, steps: int) -> DiscoveryResult:
    names = [f"s{i}" for i in range(steps)]
    return DiscoveryResult(
        commit=commit,
        base=None,
        projects=[
            DiscoveredProject(
                name="app",
                path="app",
                config_blob="0" * 40,
                phases={"test": names},
                steps=[
                    DiscoveredStep(phase="test", name=n, action="run", target="true", timeout_seconds=60) for n in names
                ],
            )
        ],
        affected=[AffectedProject(project="app", reasons=["changed"])],
        phase_groups=[PhaseGroup(group=0, phases=["test"])],
    )


async def _jobs_of_a_run(store: PostgresStore, repository: str, steps: int) -> list[Job]:
    """The run's CI jobs as the step containers of its WorkflowTemplate publish them."""
    repo = await store.get_repository(repository)
    run_id, commit = uuid4(), "c" * 40
    discovery = _discovery(commit, steps)
    step_ids = {("test", "app", s.name): uuid5(run_id, s.name) for s in discovery.projects[0].steps}
    spec = TemplateSpec(
        run_id=run_id,
        repository=repo.name,
        commit_sha=commit,
        branch="main",
        clone_url=repo.clone_url,
        pool=repo.pool,
        discovery=discovery,
        step_ids=step_ids,
    )
    doc = build_template(spec)
    workflow = {f"workflow.parameters.{p['name']}": p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    jobs = []
    for template in doc["spec"]["templates"]:
        for task in template.get("dag", {}).get("tasks", []) if template["name"].startswith("group-") else []:
            scope = workflow | {f"inputs.parameters.{p['name']}": p["value"] for p in task["arguments"]["parameters"]}
            argv = []
            for word in STEP_COMMAND[1:]:
                text = word
                for name, value in scope.items():
                    text = text.replace(f"{{{{{name}}}}}", value)
                argv.append(text)
            jobs.append(parse_job(argv, TimeoutSettings())[0])
    return jobs


@pytest.fixture
def nats_url(own_nats: ServiceProcess) -> str:
    return own_nats.url


@pytest.fixture
async def nats(own_nats: ServiceProcess) -> AsyncIterator[NatsBus]:
    """The dispatcher's connection to a real JetStream server (never the memory fake of this directory's ``bus``)."""
    bus = await NatsBus.connect(own_nats.url)
    await bus.ensure_streams(STREAMS)
    try:
        yield bus
    finally:
        await bus.close()


async def test_the_jobs_of_a_repository_in_pool_b_reach_only_the_worker_of_pool_b(
    store: PostgresStore, nats: NatsBus, nats_url: str
) -> None:
    bus = nats
    await store.register_repository(NewRepository("org-a/app", "https://git.example/a.git", pool="a"))
    await store.register_repository(NewRepository("org-b/app", "https://git.example/b.git", pool="b"))
    jobs_b = await _jobs_of_a_run(store, "org-b/app", 6)
    jobs_a = await _jobs_of_a_run(store, "org-a/app", 3)
    assert {j.pool for j in jobs_b} == {"b"}
    assert all(j.subject.startswith("pipeline.tasks.b.") for j in jobs_b)
    seen: list[tuple[str, Job]] = []
    async with (
        _worker(nats_url, "a", seen),
        _worker(nats_url, "b", seen),
        Dispatcher(bus) as dispatcher,
    ):
        results = await asyncio.gather(*(dispatcher.dispatch(job, timeout=30) for job in [*jobs_b, *jobs_a]))
    assert [r.data for r in results] == [{"pool": "b"}] * 6 + [{"pool": "a"}] * 3
    assert sorted(job.key for pool, job in seen if pool == "b") == sorted(job.key for job in jobs_b)
    assert sorted(job.key for pool, job in seen if pool == "a") == sorted(job.key for job in jobs_a)
    lags = await bus.consumer_lag(TASKS)
    assert lags == {consumer_name(JobType.CI, "a"): 0, consumer_name(JobType.CI, "b"): 0}
    assert set(lags) == {"ci-a-consumer", "ci-b-consumer"}


async def test_a_job_of_a_pool_nobody_serves_stays_queued_until_a_worker_of_that_pool_starts(
    nats: NatsBus, nats_url: str
) -> None:
    bus = nats
    seen: list[tuple[str, Job]] = []
    job = _job("c")
    async with _worker(nats_url, "a", seen), _worker(nats_url, "default", seen), Dispatcher(bus) as dispatcher:
        served = await dispatcher.dispatch(_job("a"), timeout=30)  # the pools' workers are pulling
        assert served.success
        await bus.publish(job.subject, job.model_dump_json().encode(), msg_id=job.key)
        # NATS counts a consumer's pending messages from its filter when the job is stored: exact, no waiting
        lags = await bus.consumer_lag(TASKS)
        assert lags == {"ci-a-consumer": 0, "ci-consumer": 0}
        first, last = await bus.stream_bounds(TASKS)
        assert last - first + 1 == 1  # queued in the stream, on no pool's consumer
        with pytest.raises(TransientError, match="no result"):
            await dispatcher.dispatch(_job("d"), timeout=0.5)  # another unserved pool: the dispatcher gives up
    assert [pool for pool, _ in seen] == ["a"]  # neither the a nor the default worker took c's or d's job
    async with _worker(nats_url, "c", seen), Dispatcher(bus) as dispatcher:
        result = await dispatcher.dispatch(job, timeout=30)  # already queued: its result is awaited
    assert result.data == {"pool": "c"}
    assert [pool for pool, _ in seen] == ["a", "c"]
    first, last = await bus.stream_bounds(TASKS)
    assert last - first + 1 == 1  # pool d's job is still queued
    await sample_streams(bus)
    sampled = {
        s.labels["consumer"]: (s.labels["pool"], s.value)
        for m in CONSUMER_LAG.collect()
        for s in m.samples
        if s.labels["stream"] == TASKS
    }
    # pool d has no consumer: no worker of pool d ever started, its job counts in the stream only
    assert sampled == {"ci-a-consumer": ("a", 0), "ci-c-consumer": ("c", 0), "ci-consumer": ("default", 0)}


def _job(pool: str) -> Job:
    run = uuid4()
    payload = CiPayload(
        clone_url="https://git.example/x.git",
        phase="test",
        project="app",
        project_path="app",
        step="unit",
        action="run",
        target="true",
        timeout_seconds=60,
    )
    return Job(
        key=f"ci.{run}.test.app.unit.a0",
        type=JobType.CI,
        run_id=run,
        repository="org/app",
        commit_sha="a" * 40,
        payload=payload,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        pool=pool,
    )

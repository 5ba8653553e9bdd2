"""Discovery jobs through the dispatcher, JetStream, the worker runtime, git and S3 (all real)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS, Job
from forge.embedded.process import free_port
from forge.errors import TransientError
from forge.jobs.dispatch import dispatch
from forge.testing.gitrepos import commit_files
from forge.testing.jobs import discovery_job
from forge.workflows.workers.discovery import discovery_key

from .support import PROJECT, Counting


@pytest.fixture
def monorepo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "mono.git"
    sha = commit_files(
        path,
        {
            "libs/a/.forge/project.yaml": PROJECT.format(name="a"),
            "svc/b/.forge/project.yaml": PROJECT.format(name="b") + "depends_on: [a]\n",
            "svc/b/main.py": "print('b')\n",
        },
    )
    return path, sha


async def test_discovery_job_round_trip(
    monorepo: tuple[Path, str], start_worker: Any, bus: NatsBus, objects: MinioObjectStore, handler: Counting
) -> None:
    path, sha = monorepo
    job = discovery_job(str(path), sha)
    async with start_worker():
        result = await dispatch(bus, job, timeout=30)
    assert result.success, result.error
    assert result.data is not None
    assert result.data == {"object_key": discovery_key(job.run_id), "projects": 2, "affected": 2}
    discovery = json.loads(await objects.get(discovery_key(job.run_id)))  # kept once, in object storage
    assert discovery["commit"] == sha
    assert [p["name"] for p in discovery["projects"]] == ["a", "b"]
    assert {a["project"]: a["reasons"] for a in discovery["affected"]} == {"a": ["no base: all"], "b": ["no base: all"]}

    again = await dispatch(bus, job, timeout=5)  # a restarted dispatcher: no worker runs now
    assert again == result
    assert handler.calls == [job.key]


async def test_restarted_dispatcher_does_not_publish_twice(
    monorepo: tuple[Path, str], start_worker: Any, bus: NatsBus, handler: Counting
) -> None:
    path, sha = monorepo
    job = discovery_job(str(path), sha)
    await bus.ensure_streams(STREAMS)
    with pytest.raises(TransientError, match="no result for job"):
        await dispatch(bus, job, timeout=0.5)  # no worker yet: the first dispatcher gives up
    async with start_worker():
        result = await dispatch(bus, job, timeout=30)  # same key: deduplicated by Nats-Msg-Id
        await asyncio.sleep(1.0)  # a second copy, if one had been queued, would be handled by now
    assert result.success
    assert handler.calls == [job.key]


async def test_invalid_config_is_a_permanent_failure_with_every_issue(
    tmp_path: Path, start_worker: Any, bus: NatsBus
) -> None:
    path = tmp_path / "bad.git"
    sha = commit_files(
        path,
        {
            "a/.forge/project.yaml": "name: Bad_Name\nphases: {}\n",
            "b/.forge/project.yaml": "name: b\ndepends_on: [ghost]\n",
        },
    )
    async with start_worker():
        result = await dispatch(bus, discovery_job(str(path), sha), timeout=30)
    assert not result.success
    assert result.error is not None
    assert result.error.code == "invalid_config"
    assert result.error.permanent
    files = {e["file"] for e in result.error.details["errors"]}
    assert files == {"a/.forge/project.yaml", "b/.forge/project.yaml"}
    assert "a/.forge/project.yaml:1: name:" in result.error.message


async def test_invalid_envelope_goes_to_the_dlq(start_worker: Any, bus: NatsBus) -> None:
    await bus.ensure_streams(STREAMS)
    await bus.ensure_consumer("pipeline-dlq", "dlq-reader", filter_subject="pipeline.dlq.>", ack_wait=5, max_deliver=1)
    async with start_worker():
        await bus.publish("pipeline.discovery.default.garbage", b"{not a job")
        messages = await _fetch_until(bus, "pipeline-dlq", "dlq-reader")
    assert messages[0].data == b"{not a job"
    assert messages[0].headers["Forge-Reason"].startswith("invalid job envelope")
    assert messages[0].headers["Forge-Subject"] == "pipeline.discovery.default.garbage"


async def test_unreachable_remote_is_retried_then_dead_lettered(
    start_worker: Any, bus: NatsBus, handler: Counting
) -> None:
    await bus.ensure_streams(STREAMS)
    await bus.ensure_consumer("pipeline-dlq", "dlq-reader", filter_subject="pipeline.dlq.>", ack_wait=5, max_deliver=1)
    job = discovery_job(f"git://127.0.0.1:{free_port()}/nothing-here", "c" * 40)
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
        dead = await _fetch_until(bus, "pipeline-dlq", "dlq-reader")
    assert not result.success
    assert result.error is not None
    assert not result.error.permanent
    assert handler.calls == [job.key, job.key]  # delivered max_deliver (2) times
    assert "failed on delivery 2 of 2" in dead[0].headers["Forge-Reason"]
    assert Job.model_validate_json(dead[0].data).key == job.key


async def _fetch_until(bus: NatsBus, stream: str, durable: str, timeout: float = 30) -> list[Any]:
    async with asyncio.timeout(timeout):
        while True:
            messages = await bus.fetch(stream, durable, batch=1, timeout=0.5)
            if messages:
                for message in messages:
                    await message.ack()
                return messages

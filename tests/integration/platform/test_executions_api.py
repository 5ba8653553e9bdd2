"""Executions, cancelling and step logs through the API on real PostgreSQL, NATS and S3.

Steps move only by step events (what the controller records); the API has no way to write them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.postgres_store import PostgresStore
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.events import EventKind, StepEvent
from forge.domain.status import Status
from forge.logs import LogWriter, log_key
from forge.ports.store import NewRepository, NewRun, RunExecutions

SHA = "c" * 40
PROBLEM = "application/problem+json"


def _discovery(commit: str) -> DiscoveryResult:
    def step(phase: str, name: str) -> DiscoveredStep:
        return DiscoveredStep(phase=phase, name=name, action="run", target=f"make {name}", timeout_seconds=30)

    api = DiscoveredProject(
        name="api",
        path="api",
        config_blob="0" * 40,
        phases={"test": ["unit", "lint"], "build": ["image"]},
        steps=[step("test", "unit"), step("test", "lint"), step("build", "image")],
    )
    return DiscoveryResult(
        commit=commit,
        base=None,
        projects=[api],
        affected=[AffectedProject(project="api", reasons=["changed"])],
        phase_groups=[PhaseGroup(group=0, phases=["test"]), PhaseGroup(group=1, phases=["build"])],
    )


async def executing_run(store: PostgresStore, commit: str = SHA) -> RunExecutions:
    """A run past discovery with its executions planned, as the controller leaves it."""
    await store.register_repository(NewRepository("acme/mono", "/srv/git/mono"))
    run, _ = await store.create_run(NewRun(repository="acme/mono", commit_sha=commit))
    await store.claim_discovery(limit=10)
    found = _discovery(commit)
    await store.record_discovery(run.id, found, f"d/{run.id}")
    return await store.create_executions(run.id, found)


async def step_event(
    store: PostgresStore, ex: RunExecutions, step_id: uuid.UUID, kind: EventKind, **fields: Any
) -> None:
    """What the controller does with one event a worker published."""
    await store.apply_step_events([StepEvent(run_id=ex.run_id, step_id=step_id, attempt=1, kind=kind, **fields)])


async def test_executions_show_what_step_events_recorded(client: httpx.AsyncClient, store: PostgresStore) -> None:
    ex = await executing_run(store)
    unit = ex.step_id("test", "api", "unit")
    await step_event(store, ex, unit, "started", logs_key="logs/unit.log")
    await step_event(store, ex, unit, "failed", exit_code=2, message="2 tests failed")

    tree = (await client.get(f"/v1/runs/{ex.run_id}/executions")).json()
    assert tree["run_id"] == str(ex.run_id)
    [test, build] = tree["phases"]
    assert (test["name"], test["group"], test["status"], build["status"]) == ("test", 0, "failed", "pending")
    [task] = test["tasks"]
    assert (task["project"], task["project_path"], task["status"]) == ("api", "api", "failed")
    assert task["started_at"] is not None
    assert task["completed_at"] is not None
    steps = {s["name"]: s for s in task["steps"]}
    assert list(steps) == ["unit", "lint"]
    assert (steps["unit"]["status"], steps["unit"]["exit_code"], steps["unit"]["message"]) == (
        "failed",
        2,
        "2 tests failed",
    )
    assert (steps["unit"]["attempts"], steps["unit"]["logs_key"]) == (1, "logs/unit.log")
    assert steps["unit"]["completed_at"] is not None
    assert (steps["lint"]["status"], steps["lint"]["started_at"], steps["lint"]["action"]) == ("pending", None, "run")

    missing = await client.get(f"/v1/runs/{uuid.uuid4()}/executions")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)


async def test_nothing_writes_execution_state_through_the_api(client: httpx.AsyncClient, store: PostgresStore) -> None:
    ex = await executing_run(store)
    for path in (
        f"/v1/steps/{ex.step_id('test', 'api', 'unit')}/status",
        f"/v1/tasks/{ex.tasks[0].id}/status",
        f"/v1/phases/{ex.phases[0].id}/status",
        f"/v1/runs/{ex.run_id}/status",
    ):
        refused = await client.put(path, json={"status": "success"})
        assert refused.status_code in {404, 405}, path
    run = (await client.get(f"/v1/runs/{ex.run_id}")).json()
    assert run["status"] == "running"
    assert {s.status for s in (await store.get_executions(ex.run_id)).steps} == {Status.PENDING}


async def test_delete_run_requests_cancel(client: httpx.AsyncClient, store: PostgresStore) -> None:
    ex = await executing_run(store)
    cancel = await client.delete(f"/v1/runs/{ex.run_id}")
    assert cancel.status_code == 202
    assert (cancel.json()["id"], cancel.json()["status"]) == (str(ex.run_id), "running")
    assert [r.id for r in await store.runs_cancel_requested()] == [ex.run_id]
    assert (await client.delete(f"/v1/runs/{ex.run_id}")).status_code == 202  # idempotent

    await store.finish_run(ex.run_id, Status.CANCELLED)
    finished = await client.delete(f"/v1/runs/{ex.run_id}")
    assert finished.status_code == 409
    assert finished.headers["content-type"].startswith(PROBLEM)
    assert "is already cancelled" in finished.json()["detail"]
    assert (await client.delete(f"/v1/runs/{uuid.uuid4()}")).status_code == 404


async def test_step_logs_partial_complete_and_followed(
    client: httpx.AsyncClient, store: PostgresStore, objects: MinioObjectStore
) -> None:
    ex = await executing_run(store)
    unit = ex.step_id("test", "api", "unit")
    url = f"/v1/runs/{ex.run_id}/steps/{unit}/logs"

    none_yet = await client.get(url)
    assert none_yet.status_code == 404
    assert none_yet.headers["content-type"].startswith(PROBLEM)
    assert "no log yet" in none_yet.json()["detail"]
    assert (await client.get(f"/v1/runs/{ex.run_id}/steps/{uuid.uuid4()}/logs")).status_code == 404
    other = await executing_run(store, "d" * 40)
    assert (await client.get(f"/v1/runs/{other.run_id}/steps/{unit}/logs")).status_code == 404  # not of that run

    await step_event(store, ex, unit, "started")
    writer = LogWriter(objects, log_key(ex.run_id, "test", "api", "unit"), interval=0)
    await writer.write(b"collecting 3 tests\n")
    await writer.write(b"test_a PASSED\n")
    partial = await client.get(url)
    assert partial.status_code == 200
    assert partial.json() == {"complete": False, "url": None, "content": "collecting 3 tests\ntest_a PASSED\n"}

    follow = asyncio.create_task(client.get(url, params={"follow": "true"}))
    await asyncio.sleep(0.3)
    await writer.write(b"test_b PASSED\n")
    await asyncio.sleep(0.3)
    await writer.write("test_c PASSED ✓\n".encode())
    await writer.close()
    await step_event(store, ex, unit, "success", exit_code=0)  # after its log, as a worker does
    followed = await asyncio.wait_for(follow, timeout=10)
    assert followed.status_code == 200
    assert followed.headers["content-type"].startswith("text/plain")
    whole = "collecting 3 tests\ntest_a PASSED\ntest_b PASSED\ntest_c PASSED ✓\n"
    assert followed.text == whole

    done = await client.get(url)
    assert done.status_code == 200
    body = done.json()
    assert (body["complete"], body["content"]) == (True, None)
    async with httpx.AsyncClient() as plain:  # the presigned URL works without credentials
        fetched = await plain.get(body["url"])
    assert fetched.status_code == 200
    assert fetched.content.decode() == whole

    again = await client.get(url, params={"follow": "true"})  # a complete log is sent at once
    assert again.text == whole


async def test_follow_ends_for_a_step_that_died_mid_log(
    client: httpx.AsyncClient, store: PostgresStore, objects: MinioObjectStore
) -> None:
    ex = await executing_run(store)
    lint = ex.step_id("test", "api", "lint")
    await step_event(store, ex, lint, "started", logs_key="custom/lint.log")
    writer = LogWriter(objects, "custom/lint.log", interval=0)  # the key the worker reported
    await writer.write(b"half a log")
    await step_event(store, ex, lint, "failed", exit_code=137)  # killed before closing the log
    followed = await asyncio.wait_for(
        client.get(f"/v1/runs/{ex.run_id}/steps/{lint}/logs", params={"follow": "true"}), timeout=10
    )
    assert followed.text == "half a log"


async def test_openapi_lists_reads_only(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    paths = spec["paths"]
    assert {"/v1/runs/{run_id}/executions", "/v1/runs/{run_id}/steps/{step_id}/logs"} <= set(paths)
    assert not [p for p in paths if p.endswith("/status")]
    assert "delete" in paths["/v1/runs/{run_id}"]
    assert "internal status" not in {t["name"] for t in spec["tags"]}


async def test_a_follow_spanning_a_retry_shows_each_attempt_once_and_equals_the_final_log(
    client: httpx.AsyncClient, store: PostgresStore, objects: MinioObjectStore
) -> None:
    """Attempt 1 completes its log and is ``retrying``; the follow goes on into attempt 2 (whose log starts
    with attempt 1's, as the CI worker writes it) and ends when the step is final."""
    ex = await executing_run(store)
    unit = ex.step_id("test", "api", "unit")
    key = log_key(ex.run_id, "test", "api", "unit")

    async def event(attempt: int, kind: EventKind, **fields: Any) -> None:
        await store.apply_step_events([StepEvent(run_id=ex.run_id, step_id=unit, attempt=attempt, kind=kind, **fields)])

    await event(1, "started")
    first = LogWriter(objects, key, interval=0)
    await first.write(b"forge: attempt 1 of 2\nflaky\n")
    follow = asyncio.create_task(client.get(f"/v1/runs/{ex.run_id}/steps/{unit}/logs", params={"follow": "true"}))
    await asyncio.sleep(0.3)
    await first.close()
    await event(1, "retrying", exit_code=1, message="attempt 1 of 2 failed")
    await asyncio.sleep(1.2)  # the follow polls the complete attempt-1 log meanwhile and keeps going
    assert not follow.done()
    second = LogWriter(objects, key, interval=0)
    await second.start_from(key)
    for part in await objects.list(f"{key}.parts/"):
        await objects.delete(part.key)
    await objects.delete(key)  # what the worker discards before the attempt
    await second.write(b"forge: attempt 2 of 2\n")
    await asyncio.sleep(0.3)
    await second.write(b"passed\n")
    await second.close()
    await event(2, "success", exit_code=0)
    followed = await asyncio.wait_for(follow, timeout=10)
    assert followed.status_code == 200
    assert followed.content == await objects.get(key)
    assert followed.text == "forge: attempt 1 of 2\nflaky\nforge: attempt 2 of 2\npassed\n"

"""The ``*_json`` reads on every store adapter: byte for byte what Litestar writes for the API's response
models of the typed reads (``model_dump(mode="json")`` encoded by msgspec), one snapshot each, with
a version that changes with the rows, and executions paged over steps."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import msgspec
import pytest
from pydantic import TypeAdapter

from forge.domain.entities import PipelineRun
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.errors import InvalidInputError, NotFoundError
from forge.ports.fakes._memory_json import jsonb_text
from forge.ports.store import NewRun, RunExecutions, RunFilter

from .test_executions import discovery, executing, sha

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness

_TIME = TypeAdapter(datetime | None)
#: A message with what JSON escapes and what it must not (non-ASCII, U+2028, DEL).
NASTY = 'naïve "quoted" \\ back\nslash\ttab \x01\x1f\x7f ✓ \u2028 😀'


def run_reference(run: PipelineRun) -> bytes:
    """What ``GET /v1/runs/{id}`` sent before: ``RunOut`` dumped by pydantic, encoded by msgspec; the
    discovery in jsonb's text form (the one documented difference)."""
    body: dict[str, Any] = run.model_dump(mode="json", exclude={"github_context"})
    if run.discovery is not None:
        body["discovery"] = msgspec.Raw(jsonb_text(json.dumps(body["discovery"])).encode())
    return msgspec.json.encode(body)


def executions_tree(ex: RunExecutions) -> list[dict[str, Any]]:
    """``ExecutionsOut.phases`` as it was built before (model dumps plus the details)."""

    def times(execution_id: UUID) -> dict[str, Any]:
        detail = ex.detail(execution_id)
        return {
            "started_at": _TIME.dump_python(detail.started_at, mode="json"),
            "completed_at": _TIME.dump_python(detail.completed_at, mode="json"),
        }

    return [
        {
            **phase.model_dump(mode="json"),
            **times(phase.id),
            "tasks": [
                {
                    **task.model_dump(mode="json"),
                    **times(task.id),
                    "steps": [
                        {**step.model_dump(mode="json"), **times(step.id), "message": ex.detail(step.id).message}
                        for step in ex.steps
                        if step.task_id == task.id
                    ],
                }
                for task in ex.tasks
                if task.phase_id == phase.id
            ],
        }
        for phase in ex.phases
    ]


def executions_reference(ex: RunExecutions) -> bytes:
    return msgspec.json.encode({"run_id": str(ex.run_id), "phases": executions_tree(ex)})


async def test_run_json_is_the_run_response_byte_for_byte(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    pending, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(7), branch="feat/ü", base_sha=sha(8)))
    assert (await store.run_json(pending.id)).body == run_reference(await store.get_run(pending.id))
    assert (await store.run_json(run.id)).body == run_reference(await store.get_run(run.id))

    unit = ex.step_id("test", "api", "unit")
    await store.apply_step_events([StepEvent(run_id=run.id, step_id=unit, attempt=1, kind="started")])
    await store.request_cancel(run.id)
    await store.finish_run(run.id, Status.FAILED, error=NASTY, code="step_failed")
    failed = await store.get_run(run.id)
    assert (failed.error_code, failed.cancel_requested_at is not None) == ("step_failed", True)
    assert (await store.run_json(run.id)).body == run_reference(failed)

    await store.finish_run(pending.id, Status.CANCELLED)
    assert (await store.run_json(pending.id)).body == run_reference(await store.get_run(pending.id))

    with pytest.raises(NotFoundError, match="does not exist"):
        await store.run_json(uuid4())


async def test_run_json_discovery_is_the_stored_json(store: Store, repo: str) -> None:
    run, _ = await executing(store, repo)
    body = json.loads((await store.run_json(run.id)).body)
    assert body["discovery"] == discovery(run.commit_sha).model_dump(mode="json")
    assert body == json.loads((await store.get_run(run.id)).model_dump_json(exclude={"github_context"}))


async def test_run_json_version_follows_the_row(store: Store, repo: str) -> None:
    run, _ = await executing(store, repo)
    first = await store.run_json(run.id)
    assert (await store.run_json(run.id)).version == first.version
    await store.request_cancel(run.id)
    cancelled = await store.run_json(run.id)
    assert cancelled.version != first.version
    await store.request_cancel(run.id)  # asked before: nothing changes
    assert (await store.run_json(run.id)).body == cancelled.body


async def test_executions_json_is_the_executions_response_byte_for_byte(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    fresh, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(9)))
    empty = await store.executions_json(fresh.id, limit=1000, offset=0)
    assert (empty.body, empty.total) == (f'{{"run_id":"{fresh.id}","phases":[]}}'.encode(), 0)
    assert (await store.executions_json(run.id, limit=1000, offset=0)).body == executions_reference(ex)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    await store.apply_step_events(
        [
            StepEvent(run_id=run.id, step_id=unit, attempt=1, kind="started", logs_key="logs/ü.log"),
            StepEvent(run_id=run.id, step_id=unit, attempt=1, kind="failed", exit_code=2, message=NASTY),
            StepEvent(run_id=run.id, step_id=lint, attempt=1, kind="started"),
        ]
    )
    after = await store.get_executions(run.id)
    assert (await store.executions_json(run.id, limit=1000, offset=0)).body == executions_reference(after)
    await store.finish_run(run.id, Status.CANCELLED)
    done = await store.executions_json(run.id, limit=1000, offset=0)
    assert (done.body, done.total) == (executions_reference(await store.get_executions(run.id)), 4)

    with pytest.raises(NotFoundError, match="does not exist"):
        await store.executions_json(uuid4(), limit=10, offset=0)
    for limit, offset in ((0, 0), (10_001, 0), (1, -1)):
        with pytest.raises(InvalidInputError):
            await store.executions_json(run.id, limit=limit, offset=offset)


async def test_executions_json_pages_over_steps(store: Store, repo: str) -> None:
    run, _ = await executing(store, repo)
    whole = json.loads((await store.executions_json(run.id, limit=1000, offset=0)).body)

    def steps(tree: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(p["name"], t["project"], s["name"]) for p in tree["phases"] for t in p["tasks"] for s in t["steps"]]

    every = steps(whole)
    assert len(every) == 4
    pages = []
    for offset in range(0, 5, 2):
        page = await store.executions_json(run.id, limit=2, offset=offset)
        assert page.total == 4
        tree = json.loads(page.body)
        pages.extend(steps(tree))
        for phase in tree["phases"]:  # only phases and tasks of the page's steps
            assert phase["tasks"]
            assert all(task["steps"] for task in phase["tasks"])
            assert {k: v for k, v in phase.items() if k != "tasks"} in [
                {k: v for k, v in p.items() if k != "tasks"} for p in whole["phases"]
            ]
    assert pages == every
    last = json.loads((await store.executions_json(run.id, limit=3, offset=3)).body)
    assert steps(last) == every[3:]
    assert json.loads((await store.executions_json(run.id, limit=5, offset=9)).body)["phases"] == []


async def test_executions_json_version_follows_the_rows(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    first = await store.executions_json(run.id, limit=1000, offset=0)
    assert (await store.executions_json(run.id, limit=1000, offset=0)).version == first.version
    image = ex.step_id("build", "api", "image")
    page_without_image = await store.executions_json(run.id, limit=1, offset=0)
    await store.apply_step_events([StepEvent(run_id=run.id, step_id=image, attempt=1, kind="started")])
    changed = await store.executions_json(run.id, limit=1000, offset=0)
    assert changed.version != first.version
    assert changed.body != first.body
    untouched = await store.executions_json(run.id, limit=1, offset=0)
    assert untouched.body == page_without_image.body  # its version may change: it may cover the whole run


async def test_runs_json_is_the_list_response_byte_for_byte(store: Store, repo: str) -> None:
    await executing(store, repo)
    for n in range(5):
        await store.create_run(NewRun(repository=repo, commit_sha=sha(300 + n), branch="main" if n % 2 else "dev"))
    for flt, limit, offset in (
        (RunFilter(), 50, 0),
        (RunFilter(branch="main"), 1, 1),
        (RunFilter(status=Status.RUNNING), 10, 0),
        (RunFilter(repository="no/such"), 10, 0),
        (RunFilter(), 2, 10),
    ):
        page = await store.list_runs(flt, limit=limit, offset=offset)
        items = b",".join(run_reference(run) for run in page.items)
        expected = b'{"items":[%s],"total":%d,"limit":%d,"offset":%d}' % (items, page.total, limit, offset)
        got = await store.runs_json(flt, limit=limit, offset=offset)
        assert (got.body, got.total) == (expected, page.total)
    before = await store.runs_json(RunFilter(), limit=50, offset=0)
    assert (await store.runs_json(RunFilter(), limit=50, offset=0)).version == before.version
    await store.create_run(NewRun(repository=repo, commit_sha=sha(200)))
    assert (await store.runs_json(RunFilter(), limit=50, offset=0)).version != before.version
    with pytest.raises(InvalidInputError, match="unknown run filter"):
        await store.runs_json(RunFilter(extra={"nope": 1}), limit=1, offset=0)


async def test_json_reads_see_writes_made_behind_their_back(harness: StoreHarness, store: Store, repo: str) -> None:
    """A document read before is never served stale, whoever changed the rows since."""
    run, _ = await executing(store, repo)
    before = await store.run_json(run.id)
    await store.executions_json(run.id, limit=1000, offset=0)
    await harness.set_run_status(run.id, Status.FAILED)
    after = await store.run_json(run.id)
    assert after.version != before.version
    assert json.loads(after.body)["status"] == "failed"
    assert after.body == run_reference(await store.get_run(run.id))

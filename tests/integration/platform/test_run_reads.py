"""``GET /v1/runs``, ``/v1/runs/{id}`` and ``/v1/runs/{id}/executions`` on real PostgreSQL: the bytes the
response models encoded before the reads were built by the store, ETag and 304, paging executions,
and what the OpenAPI says about them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import msgspec

from forge.adapters.postgres_store import PostgresStore
from forge.api.schemas import ExecutionsOut, PageOut, RunOut
from forge.domain.entities import PipelineRun
from forge.domain.status import Status
from forge.ports.fakes._memory_json import jsonb_text
from forge.ports.store import NewRun, RunExecutions, RunFilter

from .test_executions_api import executing_run, step_event

PENDING_SHA = "e" * 40
NASTY = 'step "unit" failed:\n\ttab \x01 naïve ✓ \u2028 😀'


def litestar_bytes(model: Any) -> bytes:
    """What Litestar sent for a response model before: ``model_dump(mode="json")`` encoded by msgspec."""
    return msgspec.json.encode(model.model_dump(mode="json"))


def run_bytes(run: PipelineRun) -> bytes:
    """``RunOut`` as Litestar encodes it, but the discovery in jsonb's text form (the documented difference)."""
    body = RunOut.of(run).model_dump(mode="json")
    if body["discovery"] is not None:
        body["discovery"] = msgspec.Raw(jsonb_text(json.dumps(body["discovery"])).encode())
    return msgspec.json.encode(body)


async def representative_runs(store: PostgresStore) -> list[PipelineRun]:
    """Pending without discovery; running with discovery; failed with an error code; cancelled."""
    running = await executing_run(store, "1" * 40)
    failed = await executing_run(store, "2" * 40)
    unit = failed.step_id("test", "api", "unit")
    await step_event(store, failed, unit, "started", logs_key="logs/unit.log")
    await step_event(store, failed, unit, "failed", exit_code=2, message=NASTY)
    await store.finish_run(failed.run_id, Status.FAILED, error=NASTY, code="step_failed")
    cancelled = await executing_run(store, "3" * 40)
    await store.request_cancel(cancelled.run_id)
    await store.finish_run(cancelled.run_id, Status.CANCELLED, code="cancelled")
    pending, _ = await store.create_run(NewRun(repository="acme/mono", commit_sha=PENDING_SHA, branch="main"))
    return [await store.get_run(i) for i in (pending.id, running.run_id, failed.run_id, cancelled.run_id)]


async def test_run_and_executions_are_the_response_models_bytes(
    client: httpx.AsyncClient, store: PostgresStore
) -> None:
    runs = await representative_runs(store)
    assert [r.status for r in runs] == [Status.PENDING, Status.RUNNING, Status.FAILED, Status.CANCELLED]
    for run in runs:
        got = await client.get(f"/v1/runs/{run.id}")
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert got.content == run_bytes(run)
        assert got.json() == RunOut.of(run).model_dump(mode="json")  # the discovery too, as JSON
        assert RunOut.model_validate_json(got.content) == RunOut.of(run)

        ex: RunExecutions = await store.get_executions(run.id)
        tree = await client.get(f"/v1/runs/{run.id}/executions")
        assert tree.status_code == 200
        assert tree.content == litestar_bytes(ExecutionsOut.of(ex))
        assert tree.headers["x-total-count"] == str(len(ex.steps))

    listed = await client.get("/v1/runs", params={"limit": 3, "offset": 1})
    page = await store.list_runs(RunFilter(), limit=3, offset=1)
    expected = PageOut[RunOut](items=[RunOut.of(r) for r in page.items], total=page.total, limit=3, offset=1)
    assert listed.json() == expected.model_dump(mode="json")
    items = b",".join(run_bytes(r) for r in page.items)
    assert listed.content == b'{"items":[%s],"total":4,"limit":3,"offset":1}' % items


async def test_etag_and_if_none_match(client: httpx.AsyncClient, store: PostgresStore) -> None:
    ex = await executing_run(store)
    for path in (f"/v1/runs/{ex.run_id}", f"/v1/runs/{ex.run_id}/executions"):
        first = await client.get(path)
        etag = first.headers["etag"]
        assert etag.startswith('"')
        assert etag.endswith('"')
        assert (await client.get(path)).headers["etag"] == etag
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            same = await client.get(path, headers={"If-None-Match": header})
            assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag), header
        other = await client.get(path, headers={"If-None-Match": '"other"'})
        assert (other.status_code, other.content) == (200, first.content)

    run_etag = (await client.get(f"/v1/runs/{ex.run_id}")).headers["etag"]
    tree_etag = (await client.get(f"/v1/runs/{ex.run_id}/executions")).headers["etag"]
    await step_event(store, ex, ex.step_id("build", "api", "image"), "started")
    changed = await client.get(f"/v1/runs/{ex.run_id}/executions", headers={"If-None-Match": tree_etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != tree_etag
    assert changed.content == litestar_bytes(ExecutionsOut.of(await store.get_executions(ex.run_id)))
    assert (await client.get(f"/v1/runs/{ex.run_id}", headers={"If-None-Match": run_etag})).status_code == 304
    await store.request_cancel(ex.run_id)
    cancelled = await client.get(f"/v1/runs/{ex.run_id}", headers={"If-None-Match": run_etag})
    assert cancelled.status_code == 200
    assert cancelled.json()["cancel_requested_at"] is not None

    missing = await client.get(f"/v1/runs/{uuid.uuid4()}", headers={"If-None-Match": "*"})
    assert missing.status_code == 404


async def test_executions_are_paged_over_steps(client: httpx.AsyncClient, store: PostgresStore) -> None:
    ex = await executing_run(store)
    url = f"/v1/runs/{ex.run_id}/executions"
    whole = (await client.get(url)).json()

    def steps(tree: dict[str, Any]) -> list[str]:
        return [s["id"] for p in tree["phases"] for t in p["tasks"] for s in t["steps"]]

    assert steps(whole) == [str(s.id) for s in ex.steps]
    pages: list[str] = []
    for offset in (0, 2):
        page = await client.get(url, params={"limit": 2, "offset": offset})
        assert page.headers["x-total-count"] == "3"
        pages += steps(page.json())
        ExecutionsOut.model_validate_json(page.content)
    assert pages == steps(whole)
    second = (await client.get(url, params={"limit": 2, "offset": 2})).json()
    assert [p["name"] for p in second["phases"]] == ["build"]
    first_etag = (await client.get(url, params={"limit": 2})).headers["etag"]
    assert first_etag != (await client.get(url, params={"limit": 2, "offset": 2})).headers["etag"]
    for bad in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}):
        assert (await client.get(url, params=bad)).status_code == 400


async def test_openapi_documents_paging_etag_and_304(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    run = spec["paths"]["/v1/runs/{run_id}"]["get"]
    tree = spec["paths"]["/v1/runs/{run_id}/executions"]["get"]
    listed = spec["paths"]["/v1/runs"]["get"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunOut"}
    assert tree["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ExecutionsOut"
    }
    assert "RunOut" in json.dumps(listed["responses"]["200"]["content"]["application/json"]["schema"])
    for operation in (run, tree):
        assert "ETag" in operation["responses"]["200"]["headers"]
        assert "304" in operation["responses"]
        assert "content" not in operation["responses"]["304"]
    assert "X-Total-Count" in tree["responses"]["200"]["headers"]
    params = {p["name"]: p for p in tree["parameters"]}
    assert params["limit"]["schema"]["default"] == 1000
    assert params["limit"]["schema"]["maximum"] == 10_000
    assert params["offset"]["schema"]["minimum"] == 0
    assert "up to 1000 steps is answered whole" in tree["description"]

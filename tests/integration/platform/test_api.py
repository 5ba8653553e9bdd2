"""The REST API on real PostgreSQL, NATS and S3 (Litestar's test client, no mocks)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.embedded.process import ServiceProcess

from .support import api_services

SHA = "a" * 40
SHA2 = "b" * 40


@pytest.fixture
async def client(store: PostgresStore, bus: NatsBus, objects: MinioObjectStore) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in this event loop over ASGI (so asyncpg's pool stays on one loop)."""
    app = create_app(api_services(store, bus, objects))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's precise ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        yield client


async def _register(client: httpx.AsyncClient, name: str = "acme/mono") -> None:
    resp = await client.post("/v1/repositories", json={"name": name, "clone_url": "/srv/git/mono"})
    assert resp.status_code in {200, 201}, resp.text


async def test_register_repository_is_idempotent(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": "/a"})
    again = await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": "/b"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert again.json()["clone_url"] == "/b"
    listed = (await client.get("/v1/repositories")).json()
    assert listed["total"] == 1
    assert (await client.get("/v1/repositories/acme/mono")).json()["name"] == "acme/mono"


async def test_create_run_is_idempotent_on_repository_and_commit(client: httpx.AsyncClient) -> None:
    await _register(client)
    body = {"repository": "acme/mono", "commit_sha": SHA, "branch": "main"}
    first = await client.post("/v1/runs", json=body)
    again = await client.post("/v1/runs", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    run = first.json()
    assert again.json()["id"] == run["id"]
    assert first.headers["location"] == f"/v1/runs/{run['id']}"
    assert (run["status"], run["discovery_status"], run["discovery"]) == ("pending", "pending", None)
    fetched = await client.get(f"/v1/runs/{run['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["commit_sha"] == SHA


async def test_list_runs_filters_paginates_and_counts(client: httpx.AsyncClient) -> None:
    await _register(client)
    await _register(client, "acme/other")
    for i in range(5):
        sha = f"{i:x}" * 40
        await client.post("/v1/runs", json={"repository": "acme/mono", "commit_sha": sha, "branch": "main"})
    await client.post("/v1/runs", json={"repository": "acme/other", "commit_sha": SHA2, "branch": "dev"})
    page = (await client.get("/v1/runs", params={"repository": "acme/mono", "limit": 2, "offset": 1})).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (5, 2, 1, 2)
    assert {r["repository"] for r in page["items"]} == {"acme/mono"}
    by_branch = (await client.get("/v1/runs", params={"branch": "dev"})).json()
    assert [r["commit_sha"] for r in by_branch["items"]] == [SHA2]
    pending = (await client.get("/v1/runs", params={"status": "pending"})).json()
    assert pending["total"] == 6


async def test_errors_are_problem_json(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"/v1/runs/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 404

    unknown_repo = await client.post("/v1/runs", json={"repository": "no/such", "commit_sha": SHA})
    assert unknown_repo.status_code == 404
    assert "no/such" in unknown_repo.json()["detail"]

    bad = await client.post("/v1/runs", json={"repository": "acme/mono", "commit_sha": "xyz"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert any("commit_sha" in str(e) for e in bad.json()["errors"])

    extra = await client.post("/v1/repositories", json={"name": "a/b", "clone_url": "/x", "surprise": 1})
    assert extra.status_code == 400

    not_json = await client.post("/v1/runs", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.headers["content-type"].startswith("application/problem+json")

    bad_limit = await client.get("/v1/runs", params={"limit": 0})
    assert bad_limit.status_code == 400


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "nats": "ok", "objects": "ok"}
    spec = (await client.get("/schema/openapi.json")).json()
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/repositories", "/readyz"} <= set(spec["paths"])


async def test_readyz_reports_a_dead_dependency(client: httpx.AsyncClient, own_nats: ServiceProcess) -> None:
    own_nats.stop()
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["nats"].startswith("error")

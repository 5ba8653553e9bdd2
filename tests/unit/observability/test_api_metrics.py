"""The API's /metrics: requests by route template and status, runs created, and the run's root span."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast
from uuid import UUID

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from forge.adapters.env_secrets import EnvSecretProvider
from forge.api.app import create_app
from forge.api.services import ApiServices
from forge.observability.tracing import root_span_id
from forge.ports import ObjectStore
from forge.ports.fakes import MemoryServer, MemoryStore
from forge.ports.store import NewRepository
from forge.testing.oidc import shared_issuer

from .support import sample

SHA = "ab" * 20
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = MemoryStore()
    await store.register_repository(NewRepository("acme/metrics", "https://git.example.com/acme/metrics.git"))
    services = ApiServices(
        database=store,
        repositories=store,
        runs=store,
        executions=store,
        releases=store,
        bus=MemoryServer().connect(),
        objects=cast(ObjectStore, object()),  # not read by these routes
        secrets=EnvSecretProvider(environ={}),
        identity=shared_issuer().provider(),
    )
    transport = httpx.ASGITransport(app=create_app(services))  # type: ignore[arg-type]  # litestar's ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        yield client


async def _scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")  # open: no token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_are_counted_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    before = await _scrape(client)
    headers = shared_issuer().headers()
    body: dict[str, Any] = {"repository": "acme/metrics", "commit_sha": SHA, "branch": "main"}
    created = await client.post("/v1/runs", json=body, headers=headers)
    assert created.status_code == 201
    again = await client.post("/v1/runs", json=body, headers=headers)
    assert again.status_code == 200
    for _ in range(2):  # the second is counted into the same series as the first
        assert (await client.get(f"/v1/runs/{created.json()['id']}")).status_code == 401
    after = await _scrape(client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("forge_api_requests_total", method="POST", route="/v1/runs", status="201") == 1
    assert moved("forge_api_requests_total", method="POST", route="/v1/runs", status="200") == 1
    assert moved("forge_api_requests_total", method="GET", route="/v1/runs/{run_id}", status="401") == 2
    assert moved("forge_api_request_duration_seconds_count", method="POST", route="/v1/runs") == 2
    assert moved("forge_api_request_duration_seconds_count", method="GET", route="/v1/runs/{run_id}") == 2
    assert moved("forge_runs_created_total", trigger="manual") == 1


async def test_metrics_is_open_and_documented(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/metrics"]["get"]
    assert "security" not in operation or operation["security"] == []
    assert any(content.startswith("text/plain") for content in operation["responses"]["200"]["content"])


async def test_a_request_that_creates_a_run_is_the_root_of_the_runs_trace(
    client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    headers = shared_issuer().headers() | {"traceparent": TRACEPARENT}
    body = {"repository": "acme/metrics", "commit_sha": "cd" * 20, "branch": "main"}
    run_id = (await client.post("/v1/runs", json=body, headers=headers)).json()["id"]
    await client.post("/v1/runs", json=body, headers=headers)  # the same run: a child of the root
    root, repeat = [s for s in spans.get_finished_spans() if s.name == "POST /v1/runs"]
    run = UUID(run_id)
    assert root.context is not None
    assert repeat.context is not None
    assert root.context.trace_id == run.int
    assert root.context.span_id == root_span_id(run)
    assert root.parent is None
    assert root.kind is SpanKind.SERVER
    assert [format(link.context.trace_id, "032x") for link in root.links] == [TRACEPARENT.split("-")[1]]
    assert repeat.context.trace_id == run.int
    assert repeat.parent is not None
    assert repeat.parent.span_id == root_span_id(run)
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 201

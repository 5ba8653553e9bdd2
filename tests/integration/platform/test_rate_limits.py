"""Rate limits: runs per identity and per repository, webhooks per repository → 429 with Retry-After.

Every API test runs twice: buckets in the process (``memory``) and in PostgreSQL (``postgres``, what
``forge-api`` uses). The bucket semantics themselves are the compliance suite's
(tests/integration/auth/test_rate_limiter_compliance.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_limits import PostgresRateLimiter
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.auth.limits import RateLimits
from forge.embedded.process import free_port
from forge.errors import InvalidInputError
from forge.ports.fakes import MemoryRateLimiter
from forge.ports.limits import RateLimiter
from forge.settings import ApiSettings
from forge.testing.logs import log_records
from forge.testing.oidc import shared_issuer

from .support import api_services, auth_headers

PROBLEM = "application/problem+json"
SECRET = "s3cret"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "postgres"])
def buckets(request: pytest.FixtureRequest, store: PostgresStore, clock: Clock) -> RateLimiter:
    if request.param == "memory":
        return MemoryRateLimiter(clock)
    return PostgresRateLimiter.of_store(store, clock=clock)


def _app(store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, buckets: RateLimiter) -> Litestar:
    secrets = EnvSecretProvider(environ={"FORGE_SECRET_HOOK": SECRET})
    limits = RateLimits(runs=3, repository_runs=4, webhooks=2, buckets=buckets)
    return create_app(api_services(store, bus, objects, secrets=secrets), rate_limits=limits)


async def _register(client: httpx.AsyncClient) -> None:
    for name in ("acme/one", "acme/two", "acme/three"):
        body = {"name": name, "clone_url": f"https://g.example/{name}.git", "webhook_secret_ref": "HOOK"}
        created = await client.post("/v1/repositories", json=body, headers=auth_headers(("operator",)))
        assert created.status_code == 201, created.text


def _client(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://forge.test")


@pytest.fixture
async def client(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, buckets: RateLimiter
) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_app(store, bus, objects, buckets)) as client:
        await _register(client)
        yield client


def _run(repository: str, n: int) -> dict[str, Any]:
    return {"repository": repository, "commit_sha": f"{n:040x}"}


def _as(subject: str) -> dict[str, str]:
    return shared_issuer().headers(("developer",), subject)


def _limited(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["title"] == "rate_limited"
    assert body["status"] == 429
    return body


def test_the_settings_name_the_limits() -> None:
    api = ApiSettings(rate_limit_runs=5, rate_limit_repository_runs=6, rate_limit_webhooks=7)
    limits = RateLimits.from_settings(api)
    assert (limits.runs, limits.repository_runs, limits.webhooks) == (5, 6, 7)
    assert isinstance(limits.buckets, MemoryRateLimiter)
    shared = MemoryRateLimiter()
    assert RateLimits.from_settings(api, shared).buckets is shared


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_limit_that_is_not_a_rate_fails_at_start(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="rate limit repository_runs must be"):
        RateLimits(repository_runs=bad)


async def test_runs_are_limited_per_identity(client: httpx.AsyncClient, clock: Clock) -> None:
    for n in range(3):
        repo = ("acme/one", "acme/two", "acme/three")[n]
        assert (await client.post("/v1/runs", json=_run(repo, n), headers=_as("jane"))).status_code == 201
    refused = await client.post("/v1/runs", json=_run("acme/one", 9), headers=_as("jane"))
    body = _limited(refused)
    assert refused.headers["retry-after"] == "20"  # 3 per minute: one every 20 s
    assert body["detail"] == "too many requests: runs created by jane are limited to 3 per minute; retry in 20 s"
    # another identity has its own budget; a release request spends the same one
    assert (await client.post("/v1/runs", json=_run("acme/two", 10), headers=_as("joe"))).status_code == 201
    release = {"repository": "acme/one", "project": "web", "commit_sha": "d" * 40}
    _limited(await client.post("/v1/releases", json=release, headers=_as("jane")))
    clock.now += 20
    assert (await client.post("/v1/runs", json=_run("acme/one", 11), headers=_as("jane"))).status_code == 201


async def test_runs_are_limited_per_repository(client: httpx.AsyncClient) -> None:
    for n, who in enumerate(("a", "b", "c", "d")):
        assert (await client.post("/v1/runs", json=_run("acme/one", n), headers=_as(who))).status_code == 201
    body = _limited(await client.post("/v1/runs", json=_run("ACME/one", 5), headers=_as("e")))
    assert body["detail"].startswith("too many requests: runs of ACME/one are limited to 4 per minute")
    assert (await client.post("/v1/runs", json=_run("acme/two", 6), headers=_as("e"))).status_code == 201


async def test_refused_requests_spend_nothing(client: httpx.AsyncClient) -> None:
    """No token, a role that may not create runs: refused before the limits, which stay whole."""
    for _ in range(5):
        assert (await client.post("/v1/runs", json=_run("acme/one", 1))).status_code == 401
        approver = shared_issuer().headers(("approver",), "jane")
        assert (await client.post("/v1/runs", json=_run("acme/one", 1), headers=approver)).status_code == 403
    assert (await client.post("/v1/runs", json=_run("acme/one", 1), headers=_as("jane"))).status_code == 201


def _delivery(repository: str, secret: str, n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"zen": "ok", "hook_id": n, "repository": {"full_name": repository}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "ping", "X-Hub-Signature-256": signature, "Content-Type": "application/json"}


async def test_webhooks_are_limited_per_repository_after_the_signature(client: httpx.AsyncClient, clock: Clock) -> None:
    for n in range(5):  # forged deliveries spend nothing
        body, headers = _delivery("acme/one", "forged", n)
        assert (await client.post("/v1/webhooks/github", content=body, headers=headers)).status_code == 401
    for n in range(2):
        body, headers = _delivery("acme/one", SECRET, n)
        assert (await client.post("/v1/webhooks/github", content=body, headers=headers)).status_code == 200
    body, headers = _delivery("acme/one", SECRET, 3)
    refused = await client.post("/v1/webhooks/github", content=body, headers=headers)
    assert _limited(refused)["detail"].startswith("too many requests: webhook deliveries for acme/one")
    assert refused.headers["retry-after"] == "30"
    body, headers = _delivery("acme/two", SECRET, 4)
    assert (await client.post("/v1/webhooks/github", content=body, headers=headers)).status_code == 200
    clock.now += 30
    body, headers = _delivery("acme/one", SECRET, 5)
    assert (await client.post("/v1/webhooks/github", content=body, headers=headers)).status_code == 200


async def test_429_is_documented_with_retry_after(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    for path in ("/v1/runs", "/v1/releases", "/v1/webhooks/github"):
        response = schema["paths"][path]["post"]["responses"]["429"]
        assert PROBLEM in response["content"], path
        assert response["headers"]["Retry-After"]["required"] is True, path
    assert "429" not in schema["paths"]["/v1/runs"]["get"]["responses"]


async def test_two_api_replicas_share_the_postgres_buckets(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, clock: Clock
) -> None:
    """Two apps (two API processes' worth: each its own limiter) on one database enforce one limit."""
    one = _app(store, bus, objects, PostgresRateLimiter.of_store(store, clock=clock))
    two = _app(store, bus, objects, PostgresRateLimiter.of_store(store, clock=clock))
    async with _client(one) as a, _client(two) as b:
        await _register(a)
        assert (await a.post("/v1/runs", json=_run("acme/one", 1), headers=_as("jane"))).status_code == 201
        assert (await b.post("/v1/runs", json=_run("acme/two", 2), headers=_as("jane"))).status_code == 201
        assert (await a.post("/v1/runs", json=_run("acme/three", 3), headers=_as("jane"))).status_code == 201
        _limited(await b.post("/v1/runs", json=_run("acme/one", 4), headers=_as("jane")))  # 3 per minute in all
        _limited(await a.post("/v1/runs", json=_run("acme/one", 5), headers=_as("jane")))
        clock.now += 20
        assert (await b.post("/v1/runs", json=_run("acme/one", 6), headers=_as("jane"))).status_code == 201
        for n in range(2):  # webhooks: 2 per minute per repository, across both
            body, headers = _delivery("acme/two", SECRET, n)
            assert (await (a, b)[n].post("/v1/webhooks/github", content=body, headers=headers)).status_code == 200
        body, headers = _delivery("acme/two", SECRET, 3)
        _limited(await a.post("/v1/webhooks/github", content=body, headers=headers))


def _errors(limit: str) -> float:
    return REGISTRY.get_sample_value("forge_rate_limit_store_errors_total", {"limit": limit}) or 0.0


async def test_a_bucket_store_outage_lets_requests_through_logged_and_counted(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore
) -> None:
    """PostgreSQL unreachable for the limiter (the store itself is up): no 500, no 429, a warning and a count."""
    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/forge", min_size=0)
    before = {limit: _errors(limit) for limit in ("runs", "repository_runs", "webhooks")}
    try:
        with log_records("forge.api.limits") as records:
            async with _client(_app(store, bus, objects, PostgresRateLimiter(dead))) as client:
                await _register(client)
                for n in range(5):  # more than the limit of 3
                    created = await client.post("/v1/runs", json=_run("acme/one", n), headers=_as("jane"))
                    assert created.status_code == 201, created.text
                for n in range(3):  # more than the limit of 2
                    body, headers = _delivery("acme/one", SECRET, n)
                    assert (await client.post("/v1/webhooks/github", content=body, headers=headers)).status_code == 200
    finally:
        await dead.close()
    assert _errors("runs") - before["runs"] == 5
    assert _errors("repository_runs") - before["repository_runs"] == 5
    assert _errors("webhooks") - before["webhooks"] == 3
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 13
    assert warnings[0].startswith("rate limit runs not checked for runs created by jane, request let through: ")
    assert "PostgreSQL is unavailable" in warnings[0]

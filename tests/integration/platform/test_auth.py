"""Authentication and authorization of the API: the role table enforced, every route walked, 401/403 as problems."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, Router, get
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import asgi
from litestar.types import Receive, Scope, Send

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.auth import guard, is_open
from forge.api.auth.guard import require_guard
from forge.api.auth.roles import ROLES, ROUTE_ROLES
from forge.api.errors import EXCEPTION_HANDLERS
from forge.embedded.process import binary
from forge.testing.oidc import FakeIssuer, shared_issuer

from .support import api_services

PROBLEM = "application/problem+json"
SHA = "c" * 40
_PARAMS = {
    "run_id": str(uuid.uuid4()),
    "step_id": str(uuid.uuid4()),
    "owner": "acme",
    "name": "mono",
    "repo": "mono",
    "project": "web",
    "ref": "1",
    "path": "x",
    "release_id": str(uuid.uuid4()),
    "approval_id": str(uuid.uuid4()),
    "deployment_id": str(uuid.uuid4()),
    "environment": "dev",
}


@pytest.fixture
async def anonymous(store: PostgresStore, bus: NatsBus, objects: MinioObjectStore) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the test issuer's verifier, and a client that sends no token unless told to."""
    app = create_app(api_services(store, bus, objects))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's precise ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        yield client


def _as(*roles: str, subject: str = "jane") -> dict[str, str]:
    return shared_issuer().headers(roles, subject)


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


async def test_every_operation_is_open_by_intent_or_needs_a_token(anonymous: httpx.AsyncClient) -> None:
    schema = (await anonymous.get("/schema/openapi.json")).json()
    walked = 0
    for template, item in schema["paths"].items():
        for lower, operation in item.items():
            method = lower.upper()
            path = template.format(**_PARAMS)
            resp = await anonymous.request(method, path, json={} if method in {"POST", "PUT", "PATCH"} else None)
            walked += 1
            if is_open(method, template):
                assert resp.status_code != 401, f"{method} {template} is open by intent"
                assert "security" not in operation, f"{method} {template}"
                continue
            assert (method, template) in ROUTE_ROLES, f"{method} {template} is not in the role table"
            _problem(resp, 401)
            assert resp.headers["www-authenticate"] == 'Bearer realm="forge"', f"{method} {template}"
            assert operation["security"] == [{"bearerAuth": []}], f"{method} {template}"
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {template}"
    assert walked >= 10
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_the_role_table_names_only_known_roles() -> None:
    for route, roles in ROUTE_ROLES.items():
        assert roles, route
        assert roles <= ROLES, route


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: shared_issuer().token(lifetime=-300), "token expired"),
        (lambda: shared_issuer().token(audience="account"), "audience mismatch"),
        (lambda: "e30.e30.", "signing algorithm None is not allowed (RS256, ES256)"),
        (lambda: "garbage", "malformed token"),
    ],
)
async def test_invalid_tokens_are_401_with_the_reason(anonymous: httpx.AsyncClient, token: Any, reason: str) -> None:
    resp = await anonymous.get("/v1/runs", headers={"Authorization": f"Bearer {token()}"})
    assert _problem(resp, 401)["detail"] == reason
    assert resp.headers["www-authenticate"] == (
        f'Bearer realm="forge", error="invalid_token", error_description="{reason}"'
    )


async def test_other_schemes_and_huge_tokens_are_refused(anonymous: httpx.AsyncClient) -> None:
    basic = await anonymous.get("/v1/runs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert _problem(basic, 401)["detail"] == "Authorization is not a Bearer token"
    huge = await anonymous.get("/v1/runs", headers={"Authorization": "Bearer " + "a" * 9000})
    assert _problem(huge, 401)["detail"] == "token longer than 8192 bytes"


async def test_a_token_from_another_issuer_is_refused(anonymous: httpx.AsyncClient, tmp_path: Path) -> None:
    other = FakeIssuer(tmp_path, url="http://issuer.test")  # same issuer URL, another key
    resp = await anonymous.get("/v1/runs", headers=other.headers())
    assert _problem(resp, 401)["detail"] == "unknown signing key"


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "denied"),
    [
        ("GET", "/v1/runs", None, ["developer", "approver", "operator", "service-account"], []),
        ("GET", "/v1/repositories", None, ["approver"], []),
        ("POST", "/v1/repositories", {"name": "acme/x", "clone_url": "https://g.example/x.git"}, ["operator"],
         ["developer", "approver", "service-account"]),
        ("POST", "/v1/runs", {"repository": "acme/auth", "commit_sha": SHA}, ["developer", "operator",
         "service-account"], ["approver"]),
    ],
)  # fmt: skip
async def test_roles_allow_and_deny(
    anonymous: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    allowed: list[str],
    denied: list[str],
) -> None:
    register = {"name": "acme/auth", "clone_url": "https://g.example/auth.git"}
    assert (await anonymous.post("/v1/repositories", json=register, headers=_as("operator"))).status_code in {200, 201}
    for role in allowed:
        resp = await anonymous.request(method, path, json=body, headers=_as(role))
        assert resp.status_code in {200, 201}, (role, resp.text)
    for role in denied:
        problem = _problem(await anonymous.request(method, path, json=body, headers=_as(role)), 403)
        assert problem["title"] == "forbidden"
        assert f"the token has {role}" in problem["detail"]


async def test_a_token_without_roles_reads_nothing(anonymous: httpx.AsyncClient) -> None:
    problem = _problem(await anonymous.get("/v1/runs", headers=_as()), 403)
    assert problem["detail"] == (
        "GET /v1/runs needs one of the roles approver, developer, operator, service-account; the token has none"
    )


async def test_cancelling_a_run_needs_a_runner(anonymous: httpx.AsyncClient) -> None:
    register = {"name": "acme/cancel", "clone_url": "https://g.example/c.git"}
    await anonymous.post("/v1/repositories", json=register, headers=_as("operator"))
    run = (
        await anonymous.post(
            "/v1/runs", json={"repository": "acme/cancel", "commit_sha": SHA}, headers=_as("developer")
        )
    ).json()
    _problem(await anonymous.delete(f"/v1/runs/{run['id']}", headers=_as("approver")), 403)
    assert (await anonymous.delete(f"/v1/runs/{run['id']}", headers=_as("service-account"))).status_code == 202


async def test_runs_record_the_tokens_subject(anonymous: httpx.AsyncClient) -> None:
    register = {"name": "acme/who", "clone_url": "https://g.example/who.git"}
    await anonymous.post("/v1/repositories", json=register, headers=_as("operator"))
    body = {"repository": "acme/who", "commit_sha": SHA, "triggered_by": "someone-else"}
    created = await anonymous.post("/v1/runs", json=body, headers=_as("developer", subject="jane.doe"))
    assert created.status_code == 201, created.text
    assert created.json()["triggered_by"] == "jane.doe"


async def test_without_an_identity_provider_every_protected_route_is_401(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore
) -> None:
    app = create_app(dataclasses.replace(api_services(store, bus, objects), identity=None))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        resp = await client.get("/v1/runs", headers=_as("operator"))
        assert _problem(resp, 401)["detail"] == "no identity provider is configured"
        assert (await client.get("/healthz")).status_code == 200


async def test_an_unreachable_issuer_is_a_503_not_a_401(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, tmp_path: Path
) -> None:
    down = FakeIssuer(tmp_path)
    down.down = True
    app = create_app(api_services(store, bus, objects, identity=down.provider()))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        resp = await client.get("/v1/runs", headers=down.headers())
    assert _problem(resp, 503)["title"] == "service_unavailable"
    assert "Retry-After" in resp.headers


async def test_a_route_missing_from_the_table_is_denied_to_every_token() -> None:
    @get("/v1/unlisted", sync_to_thread=False)
    def unlisted() -> str:
        return "secret"

    app = Litestar([unlisted], before_request=guard(shared_issuer().provider()), exception_handlers=EXCEPTION_HANDLERS)
    require_guard(app)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        _problem(await client.get("/v1/unlisted"), 401)
        problem = _problem(await client.get("/v1/unlisted", headers=_as(*sorted(ROLES))), 403)
    assert problem["detail"] == "GET /v1/unlisted is not open to any role"


def test_an_app_where_a_route_would_skip_the_guard_is_refused() -> None:
    """Litestar keeps the innermost before_request hook only: a hook of a controller's own, a route
    of another kind or an app without the guard would answer unguarded, so the app is not built."""

    async def own_hook(_: Request[Any, Any, Any]) -> None:
        return None

    @get("/", sync_to_thread=False)
    def read() -> str:
        return "secret"

    hooked = Router("/v1/hooked", route_handlers=[read], before_request=own_hook)

    @asgi("/v1/raw", copy_scope=True)
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never called")

    hook = guard(shared_issuer().provider())
    with pytest.raises(ImproperlyConfiguredException, match="/v1/hooked has a before_request hook of its own"):
        require_guard(Litestar([hooked], before_request=hook))
    with pytest.raises(ImproperlyConfiguredException, match="/v1/raw is not an HTTP route"):
        require_guard(Litestar([raw], before_request=hook))
    with pytest.raises(ImproperlyConfiguredException, match="no before_request hook"):
        require_guard(Litestar([read]))


def test_the_api_refuses_to_start_without_an_issuer() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_AUTH__")}
    done = subprocess.run([binary("forge-api")], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("forge-api: FORGE_AUTH__ISSUER is not set")
    assert len(done.stderr.strip().splitlines()) == 1

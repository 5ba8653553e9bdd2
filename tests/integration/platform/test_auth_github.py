"""GitHub Actions OIDC: a workflow's token may create runs of its own repository, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.oidc import GITHUB_ACTIONS_ISSUER, TrustedIssuers
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.auth import is_open
from forge.settings import AuthSettings
from forge.testing.oidc import FakeGithubActions, shared_issuer

from .support import api_services, auth_headers

SHA = "b" * 40
_PARAMS = {"run_id": str(uuid.uuid4()), "step_id": str(uuid.uuid4()), "owner": "acme", "name": "mono", "repo": "mono",
           "project": "web", "ref": "1", "environment": "dev", "approval_id": str(uuid.uuid4()),
           "release_id": str(uuid.uuid4()), "deployment_id": str(uuid.uuid4()), "path": "x"}  # fmt: skip


@pytest.fixture
def github() -> FakeGithubActions:
    return FakeGithubActions(audience="https://forge.example")


@pytest.fixture
async def client(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, github: FakeGithubActions
) -> AsyncIterator[httpx.AsyncClient]:
    identity = TrustedIssuers(shared_issuer().provider(), github.provider())
    app = create_app(api_services(store, bus, objects, identity=identity))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test") as client:
        for name in ("acme/mono", "acme/other"):
            body = {"name": name, "clone_url": f"https://github.com/{name}.git"}
            assert (await client.post("/v1/repositories", json=body, headers=auth_headers())).status_code == 201
        yield client


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    return body


def test_the_settings_name_the_issuer_and_audience() -> None:
    auth = AuthSettings(github_actions=True, github_actions_audience="https://forge.example")
    assert (auth.github_actions, auth.github_actions_audience) == (True, "https://forge.example")
    assert AuthSettings().github_actions is False
    assert GITHUB_ACTIONS_ISSUER == "https://token.actions.githubusercontent.com"


async def test_a_workflow_creates_a_run_of_its_own_repository(
    client: httpx.AsyncClient, github: FakeGithubActions
) -> None:
    created = await client.post(
        "/v1/runs", json={"repository": "acme/mono", "commit_sha": SHA, "branch": "main"}, headers=github.headers()
    )
    assert created.status_code == 201, created.text
    assert created.json()["triggered_by"] == "repo:acme/mono:ref:refs/heads/main"
    assert github.requests == [
        "GET https://token.actions.githubusercontent.com/.well-known/openid-configuration",
        "GET https://token.actions.githubusercontent.com/.well-known/jwks",
    ]
    same = await client.post("/v1/runs", json={"repository": "ACME/Mono", "commit_sha": SHA}, headers=github.headers())
    assert same.status_code == 404, same.text  # allowed (GitHub's names are case-insensitive), then not registered


async def test_a_workflow_cannot_create_runs_of_another_repository(
    client: httpx.AsyncClient, github: FakeGithubActions
) -> None:
    resp = await client.post("/v1/runs", json={"repository": "acme/other", "commit_sha": SHA}, headers=github.headers())
    assert _problem(resp, 403)["detail"] == (
        "a GitHub Actions token of 'acme/mono' may create runs of that repository only, not of 'acme/other'"
    )
    for body in ({"commit_sha": SHA}, {"repository": 7, "commit_sha": SHA}):
        _problem(await client.post("/v1/runs", json=body, headers=github.headers()), 403)
    garbled = await client.post("/v1/runs", content=b"{not json", headers=github.headers())
    _problem(garbled, 403)


async def test_a_workflow_token_is_refused_on_every_other_route(
    client: httpx.AsyncClient, github: FakeGithubActions
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    walked = 0
    for template, item in schema["paths"].items():
        for lower in item:
            method = lower.upper()
            if is_open(method, template) or (method, template) == ("POST", "/v1/runs"):
                continue
            body = {"repository": "acme/mono", "commit_sha": SHA} if method in {"POST", "PUT", "PATCH"} else None
            resp = await client.request(method, template.format(**_PARAMS), json=body, headers=github.headers())
            problem = _problem(resp, 403)
            assert "the token has github-actions" in problem["detail"], (method, template)
            walked += 1
    assert walked >= 10


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"audience": "https://elsewhere.example"}, "audience mismatch"),
        ({"exp": 1}, "token expired"),
        ({"repository": None}, "token has no repository claim"),
        ({"sha": None}, "token has no sha claim"),
    ],
)
async def test_invalid_workflow_tokens_are_401(
    client: httpx.AsyncClient, github: FakeGithubActions, options: dict[str, Any], reason: str
) -> None:
    token = github.token("acme/mono", **options)
    resp = await client.post(
        "/v1/runs", json={"repository": "acme/mono", "commit_sha": SHA}, headers={"Authorization": f"Bearer {token}"}
    )
    assert _problem(resp, 401)["detail"] == reason


async def test_a_platform_token_with_the_github_role_still_needs_the_claim(client: httpx.AsyncClient) -> None:
    """A realm role named github-actions gives a Keycloak token nothing: it has no repository claim."""
    headers = shared_issuer().headers(("github-actions",), "mallory")
    resp = await client.post("/v1/runs", json={"repository": "acme/mono", "commit_sha": SHA}, headers=headers)
    _problem(resp, 403)


async def test_a_token_of_an_untrusted_issuer_is_refused(client: httpx.AsyncClient, github: FakeGithubActions) -> None:
    token = github.token(iss="https://token.actions.githubusercontent.com.evil.example")
    resp = await client.get("/v1/runs", headers={"Authorization": f"Bearer {token}"})
    assert _problem(resp, 401)["detail"] in {"issuer mismatch", "unknown signing key"}

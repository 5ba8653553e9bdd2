"""``/v1/deployments`` and ``/v1/approvals`` on real PostgreSQL (releases seeded through the store port: the
controller records them; the controller's part of a deployment is in tests/integration/controller)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.entities import Release
from forge.ports.store import NewRepository
from forge.testing.oidc import shared_issuer
from forge.testing.releases import new_release

PROBLEM = "application/problem+json"
REPO = "acme/mono"


def _sha(n: int) -> str:
    return f"{n:040x}"


async def _seed(store: PostgresStore, n: int) -> Release:
    release, _ = await store.record_release(new_release(REPO, "web", n, commit_sha=_sha(n), created_by="controller"))
    return release


@pytest.fixture
async def release(store: PostgresStore) -> Release:
    await store.register_repository(NewRepository(REPO, f"https://git.example/{REPO}.git"))
    return await _seed(store, 1)


def _as(*roles: str, subject: str = "tester") -> dict[str, str]:
    return shared_issuer().headers(roles, subject)


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    return body


def _deploy(env: str, ref: str = "1", **extra: Any) -> dict[str, Any]:
    return {"repository": REPO, "project": "web", "ref": ref, "environment": env, **extra}


async def test_dev_takes_a_deployment_without_approval(client: httpx.AsyncClient, release: Release) -> None:
    resp = await client.post(
        "/v1/deployments", json=_deploy("dev", reason="try it"), headers=_as("operator", subject="olga")
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert resp.headers["location"] == f"/v1/deployments/dev/{REPO}/web"
    assert (body["status"], body["release_id"], body["release_number"]) == ("pending", str(release.id), 1)
    assert (body["deployed_by"], body["reason"], body["oci_digest"]) == ("olga", "try it", release.oci_digest)
    again = await client.post("/v1/deployments", json=_deploy("dev", ref="main-1"), headers=_as("service-account"))
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    one = await client.get(f"/v1/deployments/{body['id']}")
    assert one.json() == body
    _problem(await client.get(f"/v1/deployments/dev/{REPO}/web"), 404)  # pending: nothing active yet
    history = await client.get(f"/v1/deployments/dev/{REPO}/web/history")
    assert (history.json()["total"], history.json()["items"][0]["id"]) == (1, body["id"])


async def test_refusals_say_why(client: httpx.AsyncClient, release: Release) -> None:
    production = _problem(await client.post("/v1/deployments", json=_deploy("production")), 409)
    assert production["detail"].startswith(
        "production needs an active, unexpired approval of release 1 of acme/mono/web and there is none"
    )
    unknown = _problem(await client.post("/v1/deployments", json=_deploy("qa")), 400)
    assert unknown["detail"] == "acme/mono has no environment 'qa'; its environments are: dev, staging, production"
    _problem(await client.post("/v1/deployments", json=_deploy("dev", ref="9")), 404)
    _problem(await client.post("/v1/deployments", json=_deploy("Dev")), 400)
    _problem(await client.post("/v1/deployments", json=_deploy("dev", extra=1)), 400)
    _problem(await client.post("/v1/deployments", json=_deploy("dev"), headers=_as("developer")), 403)
    _problem(await client.post("/v1/deployments", json=_deploy("dev"), headers=_as("approver")), 403)
    _problem(await client.get(f"/v1/deployments/dev/{REPO}/web/history?limit=0"), 400)


async def test_an_approval_lets_a_release_into_staging_until_revoked(
    client: httpx.AsyncClient, release: Release
) -> None:
    ask = {**_deploy("staging"), "justification": "green in dev for a day", "expires_in": 3600}
    _problem(await client.post("/v1/approvals", json=ask, headers=_as("operator")), 403)
    _problem(await client.post("/v1/approvals", json={**ask, "justification": ""}, headers=_as("approver")), 400)
    _problem(await client.post("/v1/approvals", json={**ask, "expires_in": 31 * 86400}, headers=_as("approver")), 400)
    _problem(await client.post("/v1/approvals", json={**ask, "environment": "qa"}, headers=_as("approver")), 400)
    created = await client.post("/v1/approvals", json=ask, headers=_as("approver", subject="ada"))
    assert created.status_code == 201, created.text
    approval = created.json()
    assert (approval["status"], approval["approver"], approval["release_number"]) == ("active", "ada", 1)
    assert approval["justification"] == "green in dev for a day"
    found = await client.get(f"/v1/approvals/{release.id}/staging")
    assert found.json() == approval
    _problem(await client.get(f"/v1/approvals/{release.id}/production"), 404)

    deployed = await client.post("/v1/deployments", json=_deploy("staging"), headers=_as("operator"))
    assert deployed.status_code == 202, deployed.text
    assert deployed.json()["approval_id"] == approval["id"]

    revoked = await client.post(f"/v1/approvals/{approval['id']}/revoke", headers=_as("approver", subject="bo"))
    assert (revoked.status_code, revoked.json()["status"], revoked.json()["revoked_by"]) == (200, "revoked", "bo")
    _problem(await client.get(f"/v1/approvals/{release.id}/staging"), 404)
    _problem(await client.post(f"/v1/approvals/{approval['id']}/revoke", headers=_as("developer")), 403)
    _problem(await client.post("/v1/approvals/00000000-0000-0000-0000-000000000000/revoke"), 404)


async def test_the_active_deployment_and_its_history(
    client: httpx.AsyncClient, store: PostgresStore, release: Release
) -> None:
    second = await _seed(store, 2)
    first = (await client.post("/v1/deployments", json=_deploy("dev"))).json()
    await store.complete_deployment(UUID(first["id"]), "a" * 40)  # as the controller does
    newer = (await client.post("/v1/deployments", json=_deploy("dev", ref=_sha(2)))).json()
    assert newer["release_id"] == str(second.id)
    await store.complete_deployment(UUID(newer["id"]), "b" * 40)
    active = await client.get(f"/v1/deployments/dev/{REPO}/web")
    assert (active.json()["id"], active.json()["gitops_commit"], active.json()["status"]) == (
        newer["id"],
        "b" * 40,
        "active",
    )
    history = (await client.get(f"/v1/deployments/dev/{REPO}/web/history?limit=1&offset=1")).json()
    assert history["total"] == 2
    assert [(d["release_number"], d["status"]) for d in history["items"]] == [(1, "superseded")]
    assert release.id != second.id

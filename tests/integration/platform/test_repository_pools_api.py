"""``pool`` on /v1/repositories (real PostgreSQL): registered, moved by an operator's PATCH, checked as a pool
name with a one-line reason naming the field, never half-written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROBLEM = "application/problem+json"
BODY = {"name": "org-b/app", "clone_url": "https://git.example/org-b/app.git"}


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


def _names_pool(problem: dict[str, Any], reason: str) -> None:
    """The problem's errors name the ``pool`` field with the reason (one line)."""
    errors = problem["errors"]
    assert len(errors) == 1, errors
    assert errors[0]["key"] == "pool", errors
    assert reason in errors[0]["message"], errors
    assert "\n" not in errors[0]["message"]


async def test_a_repository_is_registered_in_a_pool_and_an_operator_moves_it(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/repositories", json={**BODY, "pool": "org-b", "secrets": ["TOKEN"]})
    assert created.status_code == 201, created.text
    assert created.json()["pool"] == "org-b"
    again = await client.post("/v1/repositories", json={**BODY, "pool": "org-b"})
    assert (again.status_code, again.json()) == (200, created.json())
    assert (await client.post("/v1/repositories", json=BODY)).status_code == 200  # omitted: no change
    conflict = _problem(await client.post("/v1/repositories", json={**BODY, "pool": "default"}), 409)
    assert conflict["fields"] == ["pool"]

    moved = await client.patch("/v1/repositories/org-b/app", json={"pool": "org-c"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["pool"], moved.json()["secrets"]) == ("org-c", ["TOKEN"])  # the grant is unchanged
    both = (await client.patch("/v1/repositories/org-b/app", json={"pool": "org-d", "secrets": []})).json()
    assert (both["pool"], both["secrets"]) == ("org-d", [])
    assert (await client.get("/v1/repositories/org-b/app")).json()["pool"] == "org-d"
    listed = (await client.get("/v1/repositories")).json()["items"]
    assert [r["pool"] for r in listed] == ["org-d"]

    plain = await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": "https://git.example/m"})
    assert plain.json()["pool"] == "default"


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        ("Org-B", "is not a pool name"),
        ("org.b", "is not a pool name"),
        ("org-*", "is not a pool name"),
        ("org->", "is not a pool name"),
        ("-org", "is not a pool name"),
        ("x" * 33, "is not a pool name"),
        ("", "is not a pool name"),
        ("deploy", "is reserved"),
    ],
)
async def test_a_bad_pool_is_a_400_naming_the_field_and_nothing_is_written(
    client: httpx.AsyncClient, pool: str, reason: str
) -> None:
    _names_pool(_problem(await client.post("/v1/repositories", json={**BODY, "pool": pool}), 400), reason)
    assert (await client.get("/v1/repositories")).json()["total"] == 0
    assert (await client.post("/v1/repositories", json={**BODY, "secrets": ["TOKEN"]})).status_code == 201
    refused = await client.patch("/v1/repositories/org-b/app", json={"pool": pool, "secrets": ["OTHER"]})
    _names_pool(_problem(refused, 400), reason)
    current = (await client.get("/v1/repositories/org-b/app")).json()
    assert (current["pool"], current["secrets"]) == ("default", ["TOKEN"])  # neither field written


async def test_an_empty_update_changes_nothing(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/repositories", json={**BODY, "pool": "org-b", "secrets": ["TOKEN"]})
    unchanged = await client.patch("/v1/repositories/org-b/app", json={})
    assert (unchanged.status_code, unchanged.json()) == (200, created.json())
    _problem(await client.patch("/v1/repositories/org-b/none", json={"pool": "org-b"}), 404)


async def test_openapi_documents_the_pool(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    for name in ("CreateRepository", "UpdateRepository"):
        pool = schemas[name]["properties"]["pool"]
        text = str(pool)
        assert "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" in text, pool
    assert "pool" in schemas["RepositoryOut"]["required"]

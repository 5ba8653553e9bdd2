"""``/v1/releases`` on real PostgreSQL (releases seeded through the store port: the controller records them)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.entities import ArtifactType, Release, Trigger
from forge.ports.store import NewRelease, NewReleaseArtifact, NewRepository, NewRun

PROBLEM = "application/problem+json"
REPO = "acme/mono"
DIGEST = "sha256:" + "ab" * 32


def sha(n: int, prefix: str = "") -> str:
    return prefix + f"{n:0{40 - len(prefix)}x}"


async def seed(store: PostgresStore, n: int, project: str = "web", **extra: Any) -> Release:
    release, _ = await store.record_release(
        NewRelease(
            repository=extra.pop("repository", REPO),
            project=project,
            commit_sha=extra.pop("commit_sha", sha(n)),
            oci_ref=f"registry.test/{REPO}/{project}:sha-{sha(n)}",
            oci_digest=DIGEST,
            trigger=extra.pop("trigger", Trigger.PUSH),
            created_by="controller",
            **extra,
        )
    )
    return release


@pytest.fixture
async def repo(store: PostgresStore) -> str:
    await store.register_repository(NewRepository(REPO, f"https://git.example/{REPO}.git"))
    return REPO


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


async def test_show_a_release_by_every_ref_form(client: httpx.AsyncClient, store: PostgresStore, repo: str) -> None:
    artifact = NewReleaseArtifact(
        "image",
        ArtifactType.CONTAINER,
        f"registry.test/{repo}/web/image:sha-{sha(1)}",
        "sha256:" + "11" * 32,
        ({"publisher": "oci", "ref": "registry.test/acme/mono/web/image@sha256:11", "digest": "sha256:11"},),
    )
    made = await seed(store, 1, tag="v1.0.0", branch="feature/x", artifacts=(artifact,))
    for ref in ("1", "v1.0.0", "feature/x-1", sha(1)[:7], sha(1)):
        resp = await client.get(f"/v1/releases/{repo}/web/{ref}")
        assert resp.status_code == 200, (ref, resp.text)
        body = resp.json()
        assert body["id"] == str(made.id)
    assert (body["number"], body["commit_sha"], body["oci_digest"], body["trigger"]) == (1, sha(1), DIGEST, "push")
    assert (body["branch"], body["tag"], body["tagged_at"]) == ("feature/x", "v1.0.0", None)
    assert body["aliases"] == [
        {"alias": "1", "type": "numeric"},
        {"alias": "v1.0.0", "type": "tag"},
        {"alias": "feature/x-1", "type": "branch"},
    ]
    assert body["artifacts"] == [
        {
            "name": "image",
            "type": "container",
            "tracking_ref": artifact.tracking_ref,
            "tracking_digest": artifact.tracking_digest,
            "published": [dict(artifact.published[0])],
        }
    ]


async def test_show_errors_are_problems(client: httpx.AsyncClient, store: PostgresStore, repo: str) -> None:
    for n in (1, 2):
        await seed(store, n, commit_sha=sha(n, "abcdef12"))
    ambiguous = _problem(await client.get(f"/v1/releases/{repo}/web/abcdef1"), 409)
    assert ambiguous["releases"] == [1, 2]
    assert "ambiguous" in ambiguous["detail"]
    missing = _problem(await client.get(f"/v1/releases/{repo}/web/v9"), 404)
    assert missing["detail"] == "acme/mono/web has no release 'v9' (neither an alias nor a commit prefix of one)"
    _problem(await client.get(f"/v1/releases/{repo}/api/1"), 404)
    _problem(await client.get("/v1/releases/acme/ghost/web/1"), 404)
    bad = _problem(await client.get(f"/v1/releases/{repo}/web/a..b"), 400)
    assert bad["field"] == "ref"
    _problem(await client.get(f"/v1/releases/{repo}/web/" + "x" * 256), 400)


async def test_list_filters_pages_and_counts(client: httpx.AsyncClient, store: PostgresStore, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))
    for n in range(1, 6):
        await seed(
            store,
            n,
            project="web" if n % 2 else "api",
            run_id=run.id if n == 1 else None,
            trigger=Trigger.TAG if n == 4 else Trigger.PUSH,
        )
    page = (await client.get("/v1/releases", params={"repository": repo, "limit": 2, "offset": 1})).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [r["commit_sha"] for r in page["items"]] == [sha(4), sha(3)]  # newest first
    web = (await client.get("/v1/releases", params={"project": "web"})).json()
    assert [r["number"] for r in web["items"]] == [3, 2, 1]
    by_run = (await client.get("/v1/releases", params={"run_id": str(run.id)})).json()
    assert [r["commit_sha"] for r in by_run["items"]] == [sha(1)]
    by_sha = (await client.get("/v1/releases", params={"commit_sha": sha(2)})).json()
    assert [(r["project"], r["number"]) for r in by_sha["items"]] == [("api", 1)]
    tags = (await client.get("/v1/releases", params={"trigger": "tag"})).json()
    assert [r["commit_sha"] for r in tags["items"]] == [sha(4)]
    nothing = (await client.get("/v1/releases", params={"repository": "acme/ghost"})).json()
    assert (nothing["items"], nothing["total"]) == ([], 0)
    beyond = (await client.get("/v1/releases", params={"offset": 1_000_000})).json()
    assert (beyond["items"], beyond["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("repository", "no-slash"),
        ("project", "Web"),
        ("run_id", "not-a-uuid"),
        ("commit_sha", "HEAD"),
        ("trigger", "nightly"),
        ("limit", "0"),
        ("limit", "501"),
        ("offset", "-1"),
        ("offset", str(2**63)),
    ],
)
async def test_bad_filters_are_a_400_naming_the_parameter(client: httpx.AsyncClient, param: str, value: str) -> None:
    problem = _problem(await client.get("/v1/releases", params={param: value}), 400)
    assert [e["key"] for e in problem["errors"]] == [param]


async def test_openapi_documents_every_status(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    expected = {
        "/v1/releases": {"200", "400"},
        "/v1/releases/{owner}/{repo}/{project}/{ref}": {"200", "400", "404", "409"},
    }
    for path, statuses in expected.items():
        responses = spec["paths"][path]["get"]["responses"]
        assert set(responses) >= statuses, path
        for status in statuses - {"200"}:
            assert PROBLEM in responses[status]["content"], (path, status)
    assert "releases" in {t["name"] for t in spec["tags"]}


async def test_unknown_release_ids_are_not_listed(client: httpx.AsyncClient, store: PostgresStore, repo: str) -> None:
    await seed(store, 1)
    listed = (await client.get("/v1/releases", params={"run_id": str(uuid4())})).json()
    assert (listed["items"], listed["total"]) == ([], 0)


async def test_a_manual_release_request_creates_one_run_that_releases_the_project(
    client: httpx.AsyncClient, store: PostgresStore, repo: str
) -> None:
    body = {"repository": repo, "project": "web", "commit_sha": sha(5), "branch": "main", "requested_by": "jane"}
    first = await client.post("/v1/releases", json=body)
    again = await client.post("/v1/releases", json=body)
    assert (first.status_code, again.status_code) == (202, 202), first.text
    run = first.json()
    assert again.json()["id"] == run["id"]
    assert first.headers["location"] == f"/v1/runs/{run['id']}"
    assert (run["trigger"], run["release_projects"], run["branch"], run["triggered_by"]) == (
        "manual",
        ["web"],
        "main",
        "jane",
    )
    other, created = await store.create_run(NewRun(repository=repo, commit_sha=sha(5), branch="main"))
    assert created  # the commit's own branch run is another run
    assert str(other.id) != run["id"]


async def test_a_release_request_for_a_released_commit_answers_the_release(
    client: httpx.AsyncClient, store: PostgresStore, repo: str
) -> None:
    made = await seed(store, 6)
    resp = await client.post("/v1/releases", json={"repository": repo, "project": "web", "commit_sha": sha(6)})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["id"], resp.json()["number"]) == (str(made.id), made.number)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"repository": "acme/ghost", "project": "web", "commit_sha": "a" * 40}, 404, None),
        ({"repository": REPO, "project": "Web", "commit_sha": "a" * 40}, 400, "project"),
        ({"repository": REPO, "project": "web", "commit_sha": "abc"}, 400, "commit_sha"),
        ({"repository": REPO, "project": "web", "commit_sha": "a" * 40, "extra": 1}, 400, "extra"),
    ],
)
async def test_bad_release_requests_are_refused(
    client: httpx.AsyncClient, repo: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    problem = _problem(await client.post("/v1/releases", json=body), status)
    if field is not None:
        assert field in str(problem)

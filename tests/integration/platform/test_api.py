"""The REST API on real PostgreSQL, NATS and S3 (Litestar's test client, no mocks)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.services import ClonePolicy
from forge.embedded.process import ServiceProcess

from .support import api_services, auth_headers

SHA = "a" * 40
SHA2 = "b" * 40
PROBLEM = "application/problem+json"


async def _register(client: httpx.AsyncClient, name: str = "acme/mono") -> None:
    resp = await client.post("/v1/repositories", json={"name": name, "clone_url": f"https://git.example/{name}.git"})
    assert resp.status_code in {200, 201}, resp.text


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


async def test_register_repository_is_idempotent(client: httpx.AsyncClient) -> None:
    body = {"name": "acme/mono", "clone_url": "https://git.example/mono.git", "webhook_secret_ref": "HOOK"}
    first = await client.post("/v1/repositories", json=body)
    again = await client.post("/v1/repositories", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = (await client.get("/v1/repositories")).json()
    assert listed["total"] == 1
    assert (await client.get("/v1/repositories/acme/mono")).json()["name"] == "acme/mono"


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"clone_url": "https://evil.example/mono.git"}, ["clone_url"]),
        ({"default_branch": "trunk"}, ["default_branch"]),
        ({"webhook_secret_ref": "ATTACKER"}, ["webhook_secret_ref"]),
        (
            {"clone_url": "https://evil.example/mono.git", "webhook_secret_ref": "ATTACKER"},
            ["clone_url", "webhook_secret_ref"],
        ),
    ],
)
async def test_registering_an_existing_name_with_other_values_is_a_conflict(
    client: httpx.AsyncClient, change: dict[str, str], fields: list[str]
) -> None:
    """No repository hijack: a second create never changes the repository."""
    body = {"name": "acme/mono", "clone_url": "https://git.example/mono.git", "webhook_secret_ref": "HOOK"}
    first = (await client.post("/v1/repositories", json=body)).json()
    problem = _problem(await client.post("/v1/repositories", json={**body, **change}), 409)
    assert (problem["repository"], problem["fields"]) == ("acme/mono", fields)
    assert "acme/mono" in problem["detail"]
    assert "evil" not in str(problem)
    assert "ATTACKER" not in str(problem)
    assert (await client.get("/v1/repositories/acme/mono")).json() == first


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:s3cret-token@github.com/acme/mono.git", "credentials"),
        ("https://s3cret-token@github.com/acme/mono.git", "credentials"),
        ("ssh://git:s3cret-token@github.com/acme/mono.git", "credentials"),
        ("file:///srv/git/mono", "https://"),
        ("ftp://git.example/mono.git", "https://"),
        ("javascript:alert(1)", "https://"),
        ("srv/git/mono", "https://"),
        ("/srv/git/mono", "local path"),
        ("http://127.0.0.1:8080/x.git", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "loopback"),
        ("http://[::1]/x.git", "loopback"),
        ("http://[::ffff:127.0.0.1]/x.git", "loopback"),
        ("http://10.0.0.7/x.git", "loopback"),
        ("git://192.168.1.1/x.git", "loopback"),
        ("http://localhost/x.git", "loopback"),
        ("http://2130706433/x.git", "loopback"),
        ("http://0x7f.1/x.git", "loopback"),
        ("http://0.0.0.0/x.git", "loopback"),
        ("git@127.0.0.1:acme/mono.git", "loopback"),
        ("https://[not-an-ip/x.git", "valid URL"),
    ],
)
async def test_hostile_clone_urls_are_refused(client: httpx.AsyncClient, url: str, reason: str) -> None:
    problem = _problem(await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": url}), 400)
    assert problem["field"] == "clone_url"
    assert reason in problem["detail"]
    assert "s3cret" not in str(problem)
    assert (await client.get("/v1/repositories")).json()["total"] == 0


async def test_a_clone_url_over_2000_characters_is_refused(client: httpx.AsyncClient) -> None:
    url = "https://user:s3cret-token@git.example/" + "a" * 2000
    problem = _problem(await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": url}), 400)
    assert "clone_url" in str(problem)
    assert "s3cret" not in str(problem)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/mono.git",
        "http://git.example:8080/acme/mono.git",
        "ssh://git@github.com/acme/mono.git",
        "git@github.com:acme/mono.git",
        "git://git.example/acme/mono.git",
        "https://140.82.112.3/acme/mono.git",
    ],
)
async def test_remote_clone_urls_are_accepted(client: httpx.AsyncClient, url: str) -> None:
    resp = await client.post("/v1/repositories", json={"name": "acme/mono", "clone_url": url})
    assert resp.status_code == 201, resp.text
    assert resp.json()["clone_url"] == url


async def test_local_clone_urls_where_the_platform_allows_them(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, tmp_path: Path
) -> None:
    cache = tmp_path / "git-cache"
    policy = ClonePolicy(allow_local=True, own_dirs=(cache, tmp_path / "work"))
    app = create_app(api_services(store, bus, objects, clones=policy))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's precise ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test", headers=auth_headers()) as client:
        await _local_clone_urls(client, tmp_path, cache)


async def _local_clone_urls(client: httpx.AsyncClient, tmp_path: Path, cache: Path) -> None:
    for name, url in (("acme/a", str(tmp_path / "src" / "a")), ("acme/b", "http://127.0.0.1:9418/b.git")):
        resp = await client.post("/v1/repositories", json={"name": name, "clone_url": url})
        assert resp.status_code == 201, resp.text
    # another repository's mirror (or any file of the platform's own) under a new name: refused
    (cache / "acme").mkdir(parents=True)
    (tmp_path / "link").symlink_to(cache / "acme")
    for url in (
        str(cache / "acme" / "a.git"),
        str(cache),
        str(tmp_path / "work" / "job"),
        str(tmp_path / "link" / "a.git"),
        f"{tmp_path}/src/../git-cache/acme/a.git",
    ):
        problem = _problem(await client.post("/v1/repositories", json={"name": "evil/copy", "clone_url": url}), 400)
        assert problem["field"] == "clone_url"
        assert url not in problem["detail"]


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/v1/runs", "offset", "-1"),
        ("/v1/runs", "offset", str(2**63)),
        ("/v1/runs", "offset", "99999999999999999999999"),
        ("/v1/runs", "offset", "1000001"),
        ("/v1/runs", "offset", "ten"),
        ("/v1/runs", "limit", "-5"),
        ("/v1/runs", "limit", str(2**64)),
        ("/v1/runs", "limit", "1.5"),
        ("/v1/repositories", "offset", str(2**63)),
        ("/v1/repositories", "offset", "-1"),
        ("/v1/repositories", "limit", "x"),
        (f"/v1/runs/{uuid.UUID(int=1)}/executions", "offset", str(2**63)),
        (f"/v1/runs/{uuid.UUID(int=1)}/executions", "limit", "0"),
    ],
)
async def test_paging_out_of_range_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, path: str, param: str, value: str
) -> None:
    problem = _problem(await client.get(path, params={param: value}), 400)
    assert [e["key"] for e in problem["errors"]] == [param]
    assert "$1" not in str(problem)
    assert "$2" not in str(problem)


async def test_the_largest_offset_is_accepted(client: httpx.AsyncClient) -> None:
    for path in ("/v1/runs", "/v1/repositories"):
        resp = await client.get(path, params={"offset": 1_000_000})
        assert resp.status_code == 200, resp.text
        assert resp.json()["items"] == []


async def test_options_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    for path, methods in (
        ("/v1/runs", "GET, OPTIONS, POST"),
        (f"/v1/runs/{uuid.uuid4()}", "DELETE, GET, OPTIONS"),
        ("/v1/repositories", "GET, OPTIONS, POST"),
    ):
        resp = await client.options(path)
        assert resp.status_code == 204
        assert resp.headers["allow"] == methods


async def test_openapi_documents_the_problem_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    expected = {
        ("/v1/repositories", "post"): {"400", "409"},
        ("/v1/repositories", "get"): {"400"},
        ("/v1/repositories/{owner}/{name}", "get"): {"404"},
        ("/v1/runs", "post"): {"400", "404", "409"},
        ("/v1/runs", "get"): {"400"},
        ("/v1/runs/{run_id}", "get"): {"404"},
        ("/v1/runs/{run_id}", "delete"): {"404", "409"},
        ("/v1/runs/{run_id}/executions", "get"): {"400", "404"},
        ("/v1/webhooks/github", "post"): {"400", "401", "409", "413", "503"},
        ("/v1/runs/{run_id}/steps/{step_id}/logs", "get"): {"400", "404", "503"},
        ("/v1/runs/{run_id}/events", "get"): {"400", "404", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        for status in statuses:
            assert PROBLEM in responses[status]["content"], (path, method, status)
    offsets = {p["name"]: p["schema"] for p in spec["paths"]["/v1/runs"]["get"]["parameters"]}
    assert offsets["offset"]["maximum"] == 1_000_000


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

    extra = await client.post(
        "/v1/repositories", json={"name": "a/b", "clone_url": "https://git.example/b.git", "surprise": 1}
    )
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


async def test_a_repository_is_registered_with_a_secret_grant_and_an_operator_changes_it(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "acme/mono", "clone_url": "https://git.example/mono.git", "secrets": ["NPM_TOKEN", "API_KEY"]}
    created = await client.post("/v1/repositories", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["secrets"] == ["API_KEY", "NPM_TOKEN"]
    assert "webhook_secret_ref" not in created.json()
    problem = _problem(await client.post("/v1/repositories", json={**body, "secrets": ["OTHER"]}), 409)
    assert problem["fields"] == ["secrets"]  # a registration never changes the grant

    updated = await client.patch("/v1/repositories/acme/mono", json={"secrets": ["DEPLOY_KEY"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["secrets"] == ["DEPLOY_KEY"]
    assert updated.json()["clone_url"] == body["clone_url"]
    assert (await client.get("/v1/repositories/acme/mono")).json()["secrets"] == ["DEPLOY_KEY"]
    _problem(await client.patch("/v1/repositories/acme/none", json={"secrets": []}), 404)
    only_secrets = {"secrets": [], "clone_url": "https://evil.example"}  # the update changes the grant only
    _problem(await client.patch("/v1/repositories/acme/mono", json=only_secrets), 400)


@pytest.mark.parametrize(
    ("secrets", "reason"),
    [
        (["lower_case"], "pattern"),
        (["A-B"], "pattern"),
        ([f"S{i}" for i in range(101)], "100"),
        (["FORGE_DATABASE__URL"], "FORGE_"),
        (["FORGE_SECRET_HOOK"], "FORGE_"),
        (["GITHUB_HOOK"], "webhook secret"),
    ],
)
async def test_a_grant_of_a_platform_credential_or_a_bad_name_is_refused(
    client: httpx.AsyncClient, secrets: list[str], reason: str
) -> None:
    hooked = {"name": "acme/hooked", "clone_url": "https://git.example/h.git", "webhook_secret_ref": "GITHUB_HOOK"}
    assert (await client.post("/v1/repositories", json=hooked)).status_code == 201
    body = {"name": "acme/mono", "clone_url": "https://git.example/mono.git"}
    problem = _problem(await client.post("/v1/repositories", json={**body, "secrets": secrets}), 400)
    assert reason in str(problem), problem
    assert (await client.get("/v1/repositories")).json()["total"] == 1  # nothing registered
    await _register(client)
    problem = _problem(await client.patch("/v1/repositories/acme/mono", json={"secrets": secrets}), 400)
    assert reason in str(problem), problem
    assert (await client.get("/v1/repositories/acme/mono")).json()["secrets"] == []


async def test_a_webhook_secret_is_never_a_granted_name(client: httpx.AsyncClient) -> None:
    granted = {"name": "acme/mono", "clone_url": "https://git.example/mono.git", "secrets": ["SHARED"]}
    assert (await client.post("/v1/repositories", json=granted)).status_code == 201
    hooked = {"name": "acme/hooked", "clone_url": "https://git.example/h.git", "webhook_secret_ref": "SHARED"}
    problem = _problem(await client.post("/v1/repositories", json=hooked), 400)
    assert problem["field"] == "webhook_secret_ref"

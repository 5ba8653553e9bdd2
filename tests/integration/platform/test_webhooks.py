"""``POST /v1/webhooks/github`` on real PostgreSQL, NATS and S3, with deliveries shaped like GitHub's.

Payloads follow docs.github.com/webhooks/webhook-events-and-payloads (``push``, ``ping``); headers
follow a real delivery (``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-Hub-Signature-256`` ...).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.routes.webhooks import MAX_WEBHOOK_BODY
from forge.embedded.process import ServiceProcess
from forge.ports import RunFilter
from forge.testing.postgres import create_database_async

from .support import api_services, auth_headers

REPO = "acme/mono"
SECRET = "It's a Secret to Everybody, also acme's"
SECRET_REF = "GITHUB_WEBHOOK_ACME"
PROBLEM = "application/problem+json"
NULL = "0" * 40
BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
TAG_OBJECT = "f8c0b5a4c1e2d3b4a5968778695a4b3c2d1e0f9a"


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
async def dsn(postgres_server: ServiceProcess) -> str:
    return await create_database_async(postgres_server.url, f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    """As ../conftest.py's, with the DSN at hand (to disable a repository)."""
    store = await PostgresStore.connect(dsn, min_size=1, max_size=5)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty secrets directory; ``acme/mono``'s secret comes from ``$FORGE_SECRET_<NAME>``."""
    monkeypatch.setenv(f"FORGE_SECRET_{SECRET_REF}", SECRET)
    path = tmp_path / "secrets"
    path.mkdir()
    return path


@pytest.fixture
async def client(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, secrets_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    services = api_services(store, bus, objects, EnvSecretProvider(secrets_dir))
    transport = httpx.ASGITransport(app=create_app(services))  # type: ignore[arg-type]  # litestar's ASGI types
    async with httpx.AsyncClient(transport=transport, base_url="http://forge.test", headers=auth_headers()) as client:
        await _register(client, REPO, SECRET_REF)
        yield client


async def _register(client: httpx.AsyncClient, name: str, secret_ref: str | None) -> None:
    body = {"name": name, "clone_url": f"https://github.com/{name}.git", "webhook_secret_ref": secret_ref}
    resp = await client.post("/v1/repositories", json=body)
    assert resp.status_code in {200, 201}, resp.text


# -- GitHub-shaped deliveries -------------------------------------------------------------------------


def _user(login: str, user_id: int) -> dict[str, Any]:
    return {
        "login": login,
        "id": user_id,
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": f"https://api.github.com/users/{login}",
        "html_url": f"https://github.com/{login}",
        "type": "User",
        "site_admin": False,
    }


def _repository(full_name: str = REPO) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": 702345678,
        "node_id": "R_kgDOKd0xzg",
        "name": name,
        "full_name": full_name,
        "private": True,
        "owner": {"name": owner, "email": None, **_user(owner, 1_234_567)},
        "html_url": f"https://github.com/{full_name}",
        "description": "The acme monorepo",
        "fork": False,
        "url": f"https://github.com/{full_name}",
        "created_at": 1_696_000_000,
        "updated_at": "2025-01-14T09:12:44Z",
        "pushed_at": 1_736_846_000,
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"https://github.com/{full_name}.git",
        "default_branch": "main",
        "master_branch": "main",
        "visibility": "private",
        "topics": [],
    }


def _commit(sha: str, message: str) -> dict[str, Any]:
    return {
        "id": sha,
        "tree_id": "9c2f5b1e2d4a6b8c0d1e2f3a4b5c6d7e8f9a0b1c",
        "distinct": True,
        "message": message,
        "timestamp": "2025-01-14T10:15:02+01:00",
        "url": f"https://github.com/{REPO}/commit/{sha}",
        "author": {"name": "Jane Doe", "email": "jane@acme.example", "username": "janedoe"},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": ["services/api/handlers.py"],
        "removed": [],
        "modified": ["services/api/Earthfile", "README.md"],
    }


def push_payload(
    *,
    ref: str = "refs/heads/main",
    before: str = BEFORE,
    after: str = AFTER,
    created: bool = False,
    deleted: bool = False,
    head: str | None = None,
    message: str = "api: handle empty carts\n\nFixes #42",
) -> dict[str, Any]:
    """A ``push`` event as GitHub sends it (``head`` is ``head_commit.id``; default ``after``)."""
    head_commit = None if deleted else _commit(head or after, message)
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": _repository(),
        "pusher": {"name": "janedoe", "email": "jane@acme.example"},
        "organization": {"login": "acme", "id": 1_234_567, "url": "https://api.github.com/orgs/acme"},
        "sender": _user("janedoe", 7_654_321),
        "created": created,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{REPO}/compare/{before[:12]}...{after[:12]}",
        "commits": [] if head_commit is None or ref.startswith("refs/tags/") else [head_commit],
        "head_commit": head_commit,
    }


def ping_payload(full_name: str = REPO) -> dict[str, Any]:
    return {
        "zen": "Design for failure.",
        "hook_id": 512_345_678,
        "hook": {
            "type": "Repository",
            "id": 512_345_678,
            "name": "web",
            "active": True,
            "events": ["push"],
            "config": {
                "content_type": "json",
                "insecure_ssl": "0",
                "url": "https://forge.acme.example/v1/webhooks/github",
            },
            "updated_at": "2025-01-14T09:00:00Z",
            "created_at": "2025-01-14T09:00:00Z",
        },
        "repository": _repository(full_name),
        "sender": _user("janedoe", 7_654_321),
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def deliver(
    client: httpx.AsyncClient,
    event: str | None,
    payload: dict[str, Any] | bytes,
    *,
    signature: str | bool | None = True,
    delivery: str | None = None,
) -> httpx.Response:
    """POST like GitHub; ``signature=True`` signs with the right secret, a string is sent as is."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8e03811",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "512345678",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-GitHub-Hook-Installation-Target-ID": "702345678",
    }
    if event is not None:
        headers["X-GitHub-Event"] = event
    if signature is True:
        headers["X-Hub-Signature-256"] = sign(body)
    elif isinstance(signature, str):
        headers["X-Hub-Signature-256"] = signature
    return await client.post("/v1/webhooks/github", content=body, headers=headers)


async def _runs(store: PostgresStore) -> int:
    return (await store.list_runs(RunFilter(repository=REPO), limit=1, offset=0)).total


def test_sign_matches_githubs_test_vector() -> None:
    """validating-webhook-deliveries.md: the helper signs exactly as GitHub does."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"Hello, World!", "It's a Secret to Everybody") == expected


# -- push ---------------------------------------------------------------------------------------------


async def test_push_to_a_branch_creates_a_run(client: httpx.AsyncClient, store: PostgresStore) -> None:
    delivery = str(uuid.uuid4())
    resp = await deliver(client, "push", push_payload(), delivery=delivery)
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert resp.headers["location"] == f"/v1/runs/{run['id']}"
    assert (run["repository"], run["branch"], run["commit_sha"], run["base_sha"]) == (REPO, "main", AFTER, BEFORE)
    assert (run["trigger"], run["triggered_by"], run["status"]) == ("push", "janedoe", "pending")
    stored = await store.get_run(uuid.UUID(run["id"]))
    assert stored.github_context == {
        "delivery": delivery,
        "ref": "refs/heads/main",
        "compare": f"https://github.com/{REPO}/compare/{BEFORE[:12]}...{AFTER[:12]}",
        "head_commit_message": "api: handle empty carts\n\nFixes #42",
    }
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["commit_sha"] == AFTER


async def test_redelivery_returns_the_same_run(client: httpx.AsyncClient, store: PostgresStore) -> None:
    delivery = str(uuid.uuid4())
    first = await deliver(client, "push", push_payload(), delivery=delivery)
    again = await deliver(client, "push", push_payload(), delivery=delivery)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert await _runs(store) == 1


async def test_new_branch_has_no_base(client: httpx.AsyncClient) -> None:
    payload = push_payload(ref="refs/heads/feature/login", before=NULL, created=True)
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["branch"], resp.json()["base_sha"]) == ("feature/login", None)


async def test_created_flag_alone_drops_the_base(client: httpx.AsyncClient) -> None:
    resp = await deliver(client, "push", push_payload(ref="refs/heads/release/1.x", created=True))
    assert resp.status_code == 201, resp.text
    assert resp.json()["base_sha"] is None


async def test_triggered_by_falls_back_to_the_sender(client: httpx.AsyncClient) -> None:
    payload = push_payload()
    payload["pusher"] = {"name": "", "email": None}
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 201, resp.text
    assert resp.json()["triggered_by"] == "janedoe"


async def test_annotated_tag_push_runs_the_tagged_commit(client: httpx.AsyncClient) -> None:
    """``after`` is the tag object's SHA; ``head_commit.id`` is the commit the tag points to."""
    payload = push_payload(ref="refs/tags/v1.4.0", before=NULL, after=TAG_OBJECT, head=AFTER, created=True)
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert (run["trigger"], run["branch"], run["commit_sha"], run["base_sha"]) == ("tag", None, AFTER, None)
    assert run["tag"] == "v1.4.0"


async def test_tag_on_a_commit_that_already_ran_gets_a_run_of_its_own(
    client: httpx.AsyncClient, store: PostgresStore
) -> None:
    """The usual release flow: main's CI passed, then main is tagged; the tag's releases need a run."""
    branch = await deliver(client, "push", push_payload())
    tag = push_payload(ref="refs/tags/api/v1.4.0", before=NULL, after=TAG_OBJECT, head=AFTER, created=True)
    first = await deliver(client, "push", tag)
    again = await deliver(client, "push", tag)
    assert (branch.status_code, first.status_code, again.status_code) == (201, 201, 200)
    run = first.json()
    assert run["id"] != branch.json()["id"]
    assert again.json()["id"] == run["id"]
    assert (run["trigger"], run["tag"], run["branch"], run["commit_sha"]) == ("tag", "api/v1.4.0", None, AFTER)
    assert await _runs(store) == 2


async def test_lightweight_tag_push_runs_after(client: httpx.AsyncClient) -> None:
    payload = push_payload(ref="refs/tags/v1.4.1", before=NULL, created=True)
    payload["head_commit"] = None
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["trigger"], resp.json()["commit_sha"]) == ("tag", AFTER)


@pytest.mark.parametrize(
    ("ref", "reason"), [("refs/heads/feature/old", "branch deleted"), ("refs/tags/v0.1.0", "tag deleted")]
)
async def test_deleted_ref_is_ignored(client: httpx.AsyncClient, store: PostgresStore, ref: str, reason: str) -> None:
    resp = await deliver(client, "push", push_payload(ref=ref, after=NULL, deleted=True))
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"ignored": reason}
    assert await _runs(store) == 0


async def test_push_to_another_ref_is_ignored(client: httpx.AsyncClient, store: PostgresStore) -> None:
    resp = await deliver(client, "push", push_payload(ref="refs/notes/commits"))
    assert (resp.status_code, resp.json()) == (202, {"ignored": "pushes to refs/notes/commits are not handled"})
    assert await _runs(store) == 0


# -- other events -------------------------------------------------------------------------------------


async def test_ping(client: httpx.AsyncClient) -> None:
    resp = await deliver(client, "ping", ping_payload())
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "zen": "Design for failure.", "hook_id": 512_345_678}


async def test_ping_with_the_secret_in_a_file(
    client: httpx.AsyncClient, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (secrets_dir / "GITHUB_WEBHOOK_WIDGETS").write_text("widgets-secret\n")  # ``echo`` adds the newline
    await _register(client, "acme/widgets", "GITHUB_WEBHOOK_WIDGETS")
    body = json.dumps(ping_payload("acme/widgets")).encode()
    resp = await deliver(client, "ping", body, signature=sign(body, "widgets-secret"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is True


async def test_other_events_are_ignored(client: httpx.AsyncClient, store: PostgresStore) -> None:
    issues = {"action": "opened", "issue": {"number": 7, "title": "Flaky build"}, "repository": _repository()}
    resp = await deliver(client, "issues", issues)
    assert (resp.status_code, resp.json()) == (202, {"ignored": "issues events are not handled"})
    assert await _runs(store) == 0


async def test_missing_event_header(client: httpx.AsyncClient) -> None:
    resp = await deliver(client, None, push_payload())
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert "X-GitHub-Event" in resp.json()["detail"]


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("sha256=" + hmac.new(b"not the secret", b"x", hashlib.sha256).hexdigest(), "does not match"),
        ("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0", "must start with 'sha256='"),
        ("sha256=" + "g" * 64, "64 hexadecimal digits"),
        ("sha256=abc123", "64 hexadecimal digits"),
        ("sha256=", "64 hexadecimal digits"),
        ("SHA256=" + "a" * 64, "must start with 'sha256='"),
    ],
)
async def test_bad_signatures_are_refused(
    client: httpx.AsyncClient, store: PostgresStore, signature: str | None, reason: str
) -> None:
    body = json.dumps(push_payload()).encode()
    resp = await deliver(client, "push", body, signature=signature if signature is not None else False)
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert (problem["status"], problem["title"]) == (401, "invalid_signature")
    assert reason in problem["detail"]
    assert sign(body).removeprefix("sha256=") not in resp.text  # never the expected signature
    assert await _runs(store) == 0


async def test_signature_of_another_body_is_refused(client: httpx.AsyncClient, store: PostgresStore) -> None:
    signed = json.dumps(push_payload()).encode()
    tampered = json.dumps(push_payload(ref="refs/heads/prod")).encode()
    resp = await deliver(client, "push", tampered, signature=sign(signed))
    assert resp.status_code == 401
    assert "does not match" in resp.json()["detail"]
    assert await _runs(store) == 0


@pytest.mark.parametrize("signed", [False, True])
async def test_unknown_repositories_are_answered_as_a_bad_signature(client: httpx.AsyncClient, signed: bool) -> None:
    """No name enumeration: an unknown repository, one without a webhook secret and a registered one
    under a wrong signature get the same status and body shape, valid-looking signature or not."""
    await _register(client, "acme/nosecret", None)
    answers = {}
    for name in ("acme/ghost", "acme/nosecret", REPO):
        payload = push_payload()
        payload["repository"] = _repository(name)
        body = json.dumps(payload).encode()
        signature = sign(body, "a guess") if name == REPO or not signed else sign(body)
        resp = await deliver(client, "push", body, signature=signature)
        assert resp.status_code == 401, resp.text
        assert resp.headers["content-type"].startswith(PROBLEM)
        problem = resp.json()
        answers[name] = {**problem, "detail": problem["detail"].replace(name, "<name>")}
    assert answers["acme/ghost"] == answers["acme/nosecret"] == answers[REPO]
    assert "does not match" in answers[REPO]["detail"]


@pytest.mark.parametrize("event", ["x" * 101, "Push", "pu-sh", "push,ping", "push1", "../push"])
async def test_malformed_event_names_are_refused(client: httpx.AsyncClient, event: str) -> None:
    resp = await deliver(client, event, push_payload())
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert "X-GitHub-Event" in resp.json()["detail"]


async def test_a_10_kb_event_name_is_refused(client: httpx.AsyncClient) -> None:
    resp = await deliver(client, "a" * 10_000, push_payload())
    assert resp.status_code == 400
    assert "a" * 101 not in resp.text


async def test_disabled_repository(client: httpx.AsyncClient, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE repositories SET enabled = false WHERE name = $1", REPO)
    finally:
        await conn.close()
    resp = await deliver(client, "push", push_payload())
    assert resp.status_code == 409
    assert "disabled" in resp.json()["detail"]


async def test_unresolvable_secret_is_a_server_problem_that_names_no_secret(client: httpx.AsyncClient) -> None:
    await _register(client, "acme/lost", "GITHUB_WEBHOOK_LOST")
    payload = push_payload()
    payload["repository"] = _repository("acme/lost")
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 503
    assert "acme/lost" in resp.json()["detail"]
    assert "GITHUB_WEBHOOK_LOST" not in resp.text


@pytest.mark.parametrize(
    "body", [b"{nope", b"", b"\xff\xfe{}", b"[" * 10_000, b'{"repository": {"full_name": "acme/mono"}']
)
async def test_malformed_json(client: httpx.AsyncClient, body: bytes) -> None:
    resp = await deliver(client, "push", body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert "not valid JSON" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (["repository"], "repository"),
        (["repository", "full_name"], "repository.full_name"),
        (["after"], "after"),
        (["ref"], "ref"),
        (["pusher"], "pusher"),
    ],
)
async def test_missing_fields_are_named(client: httpx.AsyncClient, path: list[str], field: str) -> None:
    payload = copy.deepcopy(push_payload())
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 400, resp.text
    problem = resp.json()
    assert problem["field"] == field
    assert field in problem["detail"]


async def test_malformed_fields_are_named(client: httpx.AsyncClient, store: PostgresStore) -> None:
    payload = push_payload()
    payload["after"] = "HEAD"
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 400
    assert resp.json()["field"] == "after"
    payload = push_payload()
    payload["head_commit"]["id"] = 42
    resp = await deliver(client, "push", payload)
    assert (resp.status_code, resp.json()["field"]) == (400, "head_commit.id")
    assert await _runs(store) == 0


async def test_form_encoded_deliveries_are_refused(client: httpx.AsyncClient) -> None:
    body = b"payload=" + json.dumps(push_payload()).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "push"}
    resp = await client.post(
        "/v1/webhooks/github", content=body, headers={**headers, "X-Hub-Signature-256": sign(body)}
    )
    assert resp.status_code == 400
    assert "application/json" in resp.json()["detail"]


async def test_oversized_body(client: httpx.AsyncClient, store: PostgresStore) -> None:
    payload = push_payload(message="x" * MAX_WEBHOOK_BODY)
    resp = await deliver(client, "push", payload)
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert "5 MiB" in resp.json()["detail"]
    assert await _runs(store) == 0


async def test_oversized_streamed_body(client: httpx.AsyncClient) -> None:
    """Without a Content-Length the limit holds on the bytes received."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b" " * (1024 * 1024)

    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    resp = await client.post("/v1/webhooks/github", content=chunks(), headers=headers)
    assert resp.status_code == 413, resp.text


async def test_a_long_commit_message_is_truncated_in_the_context(
    client: httpx.AsyncClient, store: PostgresStore
) -> None:
    resp = await deliver(client, "push", push_payload(message="m" * 50_000))
    assert resp.status_code == 201, resp.text
    context = (await store.get_run(uuid.UUID(resp.json()["id"]))).github_context
    assert context is not None
    assert len(context["head_commit_message"]) == 10_000


async def test_openapi_documents_the_webhook(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    operation = spec["paths"]["/v1/webhooks/github"]["post"]
    assert operation["summary"] == "Receive a GitHub webhook delivery"
    assert {"200", "201", "202", "400", "401", "409", "413", "503"} <= set(operation["responses"])
    assert "404" not in operation["responses"]
    assert {p["name"] for p in operation["parameters"]} >= {"X-GitHub-Event", "X-Hub-Signature-256"}


# -- fuzz: untrusted input never reaches a 5xx ------------------------------------------------------

_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_SHAS = st.sampled_from([AFTER, BEFORE, NULL, TAG_OBJECT, "HEAD", "", "g" * 40]) | st.text(_ASCII, max_size=45)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def _pushes(draw: st.DrawFn) -> dict[str, Any]:
    """GitHub-shaped pushes with fields dropped, retyped or replaced."""
    payload = push_payload(
        ref=draw(st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/pull/1/head", ""]) | st.text(max_size=30)),
        before=draw(_SHAS),
        after=draw(_SHAS),
        created=draw(st.booleans()),
        deleted=draw(st.booleans()),
    )
    payload["repository"]["full_name"] = draw(st.sampled_from([REPO, "acme/ghost", "", "a/b/c"]))
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(_JSON)
    return payload


_BODIES = (
    st.binary(max_size=512)
    | _JSON.map(lambda value: json.dumps(value).encode())
    | _pushes().map(lambda payload: json.dumps(payload).encode())
)
_SIGNATURES = (
    st.none() | st.text(_ASCII, max_size=80) | st.text("0123456789abcdefABCDEFxyz", max_size=70).map("sha256=".__add__)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=_BODIES,
    event=st.sampled_from(["push", "ping", "issues", ""]) | st.text(_ASCII, max_size=20),
    signature=_SIGNATURES,
    signed=st.booleans(),
)
async def test_random_deliveries_never_fail_the_server(
    client: httpx.AsyncClient, body: bytes, event: str, signature: str | None, signed: bool
) -> None:
    resp = await deliver(client, event, body, signature=sign(body) if signed else (signature or False))
    hypothesis_event(f"HTTP {resp.status_code}")  # --hypothesis-show-statistics: which paths were reached
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith(PROBLEM)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_pushes(), event=st.sampled_from(["push", "ping"]))
async def test_signed_mangled_payloads_never_fail_the_server(
    client: httpx.AsyncClient, payload: dict[str, Any], event: str
) -> None:
    """Past the signature: the full parse of GitHub-shaped payloads with fields dropped or retyped."""
    resp = await deliver(client, event, payload)
    hypothesis_event(f"HTTP {resp.status_code}")
    assert resp.status_code < 500, (resp.status_code, resp.text)

"""``forge release list|show`` and ``forge runs list|show|cancel`` against the API served over real HTTP
(uvicorn in this event loop), on real PostgreSQL; releases and runs seeded through the store ports, as the
controller and the API write them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from click.testing import CliRunner, Result

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.cli.main import cli
from forge.domain.entities import ArtifactType, Trigger
from forge.embedded.process import free_port
from forge.ports.store import NewRelease, NewReleaseArtifact, NewRepository, NewRun

from .support import api_services, auth_headers

REPO = "acme/mono"
DIGEST = "sha256:" + "ab" * 32


def sha(n: int, prefix: str = "") -> str:
    return prefix + f"{n:0{40 - len(prefix)}x}"


class _Server(uvicorn.Server):
    """No signal handlers of its own: the test runner owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def api_url(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    monkeypatch.setenv("FORGE_TOKEN", auth_headers()["Authorization"].removeprefix("Bearer "))
    app = create_app(api_services(store, bus, objects))
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"))
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not serving.done(), "the API did not start"
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


@pytest.fixture
async def releases(store: PostgresStore) -> None:
    await store.register_repository(NewRepository(REPO, f"https://git.example/{REPO}.git"))
    image = NewReleaseArtifact(
        "image",
        ArtifactType.CONTAINER,
        f"registry.test/{REPO}/web/image:sha-{sha(2)}",
        "sha256:" + "11" * 32,
        ({"publisher": "oci", "ref": "registry.test/acme/mono/web/image@sha256:11", "digest": "sha256:11"},),
    )
    for n, project, extra in (
        (1, "web", {"branch": "main"}),
        (2, "web", {"branch": "main", "tag": "v1.0.0", "artifacts": (image,)}),
        (3, "api", {}),
    ):
        await store.record_release(
            NewRelease(
                repository=REPO,
                project=project,
                commit_sha=sha(n, "abcdef12" if project == "web" else ""),
                oci_ref=f"registry.test/{REPO}/{project}:sha-{sha(n)}",
                oci_digest=DIGEST,
                trigger=Trigger.PUSH,
                created_by="controller",
                **extra,
            )
        )


async def forge(*args: str) -> Result:
    """The ``forge`` command, run in a thread so this loop keeps serving the API."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


@pytest.mark.usefixtures("releases")
async def test_list_prints_a_table_and_json(api_url: str) -> None:
    table = await forge("release", "list", "--api", api_url)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NUMBER", "REPOSITORY", "PROJECT", "COMMIT", "TRIGGER", "ALIASES", "CREATED"]
    assert [line.split()[:3] for line in lines[1:]] == [["1", REPO, "api"], ["2", REPO, "web"], ["1", REPO, "web"]]
    assert "2, v1.0.0, main-2" in lines[2]
    assert table.stderr == "3 of 3 release(s)\n"

    filtered = await forge("release", "list", "--api", api_url, "--project", "web", "--limit", "1", "--json")
    assert filtered.exit_code == 0, filtered.stderr
    page = json.loads(filtered.stdout)
    assert (page["total"], page["limit"], [r["number"] for r in page["items"]]) == (2, 1, [2])
    assert page["items"][0]["aliases"][1] == {"alias": "v1.0.0", "type": "tag"}


@pytest.mark.usefixtures("releases")
async def test_show_by_number_tag_alias_and_prefix(api_url: str) -> None:
    for ref in ("2", "v1.0.0", "main-2", sha(2, "abcdef12")):
        shown = await forge("release", "show", REPO, "web", ref, "--api", api_url, "--json")
        assert shown.exit_code == 0, (ref, shown.stderr)
        assert json.loads(shown.stdout)["commit_sha"] == sha(2, "abcdef12")
    text = await forge("release", "show", REPO, "web", "v1.0.0", "--api", api_url)
    assert text.exit_code == 0, text.stderr
    assert "release:    2" in text.stdout
    assert "aliases:    2 (numeric), v1.0.0 (tag), main-2 (branch)" in text.stdout
    assert f"artifact:   image (container) registry.test/{REPO}/web/image:sha-{sha(2)}" in text.stdout


@pytest.mark.usefixtures("releases")
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("9", "forge release show: acme/mono/web has no release '9' (neither an alias nor a commit prefix of one)"),
        ("abcdef1", "forge release show: release ref 'abcdef1' of acme/mono/web is an ambiguous commit prefix"),
        ("a..b", "forge release show: release ref 'a..b' is neither a release number, alias nor commit prefix"),
    ],
)
async def test_show_errors_are_one_line_and_exit_1(api_url: str, ref: str, message: str) -> None:
    result = await forge("release", "show", REPO, "web", ref, "--api", api_url)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


async def test_usage_errors_exit_2_and_an_absent_api_exits_1(api_url: str) -> None:
    bad = await forge("release", "show", "no-slash", "web", "1", "--api", api_url)
    assert bad.exit_code == 2
    assert "is not OWNER/REPO" in bad.stderr
    bad_filter = await forge("release", "list", "--api", api_url, "--repository", "no-slash")
    assert bad_filter.exit_code == 1
    assert bad_filter.stderr.startswith("forge release list: ")
    assert bad_filter.stderr.rstrip().endswith(": repository")
    gone = await forge("release", "list", "--api", f"http://127.0.0.1:{free_port()}")
    assert gone.exit_code == 1
    assert gone.stderr.startswith("forge release list: the API did not answer")


async def test_runs_list_show_and_cancel(api_url: str, store: PostgresStore) -> None:
    await store.register_repository(NewRepository(REPO, f"https://git.example/{REPO}.git"))
    main, _ = await store.create_run(NewRun(repository=REPO, commit_sha=sha(7), branch="main"))
    tag, _ = await store.create_run(NewRun(repository=REPO, commit_sha=sha(7), tag="v1.0.0", trigger=Trigger.TAG))

    table = await forge("runs", "list", "--api", api_url, "-r", REPO)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["RUN", "REPOSITORY", "REF", "COMMIT", "STATUS", "ERROR", "CREATED"]
    assert {line.split()[0] for line in lines[1:]} == {str(main.id), str(tag.id)}
    assert any("tag v1.0.0" in line for line in lines[1:])
    assert table.stderr == "2 of 2 run(s)\n"

    shown = await forge("runs", "show", str(tag.id), "--api", api_url)
    assert shown.exit_code == 0, shown.stderr
    assert f"{'ref:':<12}tag v1.0.0" in shown.stdout
    assert f"{'status:':<12}pending" in shown.stdout

    cancelled = await forge("runs", "cancel", str(main.id), "--api", api_url, "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["cancel_requested_at"] is not None

    missing = await forge("runs", "show", "00000000-0000-0000-0000-000000000000", "--api", api_url)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("forge runs show: ")
    assert missing.stderr.count("\n") == 1

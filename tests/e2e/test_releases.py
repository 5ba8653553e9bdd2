"""Releases end to end: a push to main builds the artifact and pushes the Release OCI artifact to the real
registry; the controller records it with its number and tags the number; a second commit is release 2; a
tag pushed on a released commit names that release. What was pushed is pulled back from the registry.

``tests/golden/releases/e2e-hello-resources.json`` holds the rendered resources (the registry's address
and the test's repository written as ``<registry>`` and ``<owner>/<repo>``; the image digest is the
example producer's, which is reproducible); ``FORGE_UPDATE_GOLDEN=1`` rewrites it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from click.testing import CliRunner

from forge.adapters.oras_registry import OrasRegistry
from forge.cli.main import cli
from forge.releases import ReleaseMetadata, unpack_resources
from forge.releases.media_types import RELEASE_ARTIFACT_TYPE, RELEASE_METADATA, RESOURCES
from forge.testing.gitrepos import commit_files
from forge.testing.platform import Platform

from .support import hello_files, make_repo, step_map, wait_run, wait_until

GOLDEN = Path(__file__).parents[1] / "golden" / "releases" / "e2e-hello-resources.json"


def _run(client: httpx.Client, platform: Platform, **body: Any) -> dict[str, Any]:
    created = client.post("/v1/runs", json=body)
    assert created.status_code in (200, 201), created.text
    run = wait_run(client, created.json()["id"], platform, timeout=180)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    return run


def _releases(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/releases", params=params).json()["items"]
    return items


def _check_golden(objects: list[dict[str, Any]], registry: str, repository: str) -> None:
    text = json.dumps(objects, indent=2, sort_keys=True).replace(registry, "<registry>")
    text = text.replace(repository, "<owner>/<repo>") + "\n"
    if os.environ.get("FORGE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"{GOLDEN} differs; run with FORGE_UPDATE_GOLDEN=1 and review the diff"


def test_pushes_to_main_release_and_a_tag_names_the_release(platform: Platform, client: httpx.Client) -> None:
    name, first = make_repo(platform, client, hello_files("hello 1", manual=True))
    assert platform.registry_url is not None
    registry = OrasRegistry(platform.registry_url)
    host = urlsplit(platform.registry_url).netloc

    run = _run(client, platform, repository=name, commit_sha=first, branch="main")
    assert [(r["project"], r["trigger"]) for r in run["discovery"]["releases"]] == [("hello", "push")]
    steps = step_map(client, run["id"])
    assert steps["release/hello/artifact-hello"]["status"] == "success"
    assert steps["release/hello/release"]["status"] == "success"
    (one,) = _releases(client, run_id=run["id"])
    assert (one["number"], one["commit_sha"], one["trigger"], one["branch"]) == (1, first, "push", "main")
    assert [a["alias"] for a in one["aliases"]] == ["1", "main-1"]
    (artifact,) = one["artifacts"]
    assert artifact["tracking_ref"].startswith(f"{host}/{name}/hello/hello@sha256:")

    # pulled back from the registry by digest: the manifest, its layers, the rendered resources
    repository = f"{name}/hello"
    manifest = asyncio.run(registry.manifest(repository, one["oci_digest"]))
    assert one["oci_ref"] == f"{host}/{repository}@{manifest.digest}"
    assert manifest.artifact_type == RELEASE_ARTIFACT_TYPE
    assert [layer["mediaType"] for layer in manifest.content["layers"]] == [RELEASE_METADATA, RESOURCES]
    meta_layer, resources_layer = manifest.content["layers"]
    metadata = ReleaseMetadata.from_bytes(
        asyncio.run(registry.blob(repository, meta_layer["digest"], max_bytes=1 << 20))
    )
    assert (metadata.commit_sha, metadata.branch, metadata.resources_digest) == (
        first,
        "main",
        resources_layer["digest"],
    )
    objects = unpack_resources(asyncio.run(registry.blob(repository, resources_layer["digest"], max_bytes=1 << 20)))
    _check_golden(objects, host, name)
    image = objects[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == metadata.artifacts[0].ref
    pushed_image = asyncio.run(registry.manifest(f"{name}/hello/hello", image.rpartition("@")[2]))
    assert pushed_image.media_type == "application/vnd.oci.image.manifest.v1+json"

    # the controller tags the release number in the registry
    wait_until(lambda: "1" in asyncio.run(registry.tags(repository)), platform)
    assert asyncio.run(registry.manifest(repository, "1")).digest == one["oci_digest"]

    # a second commit on main is release 2
    second = commit_files(platform.git_base / f"{name}.git", {"services/hello/main.py": "print('hello 2')\n"}, "two")
    run2 = _run(client, platform, repository=name, commit_sha=second, base_sha=first, branch="main")
    (two,) = _releases(client, run_id=run2["id"])
    assert (two["number"], two["commit_sha"]) == (2, second)
    assert two["oci_digest"] != one["oci_digest"]
    wait_until(lambda: "2" in asyncio.run(registry.tags(repository)), platform)

    # a tag pushed on the released commit: its run reuses what was published and names release 2
    tag_run = _run(client, platform, repository=name, commit_sha=second, tag="hello/v1.0.0", trigger="tag")
    assert tag_run["id"] != run2["id"]
    assert [r["trigger"] for r in tag_run["discovery"]["releases"]] == ["tag"]
    tagged = client.get(f"/v1/releases/{name}/hello/hello/v1.0.0").json()
    assert (tagged["number"], tagged["oci_digest"]) == (2, two["oci_digest"])
    assert [a["alias"] for a in tagged["aliases"]] == ["2", "hello/v1.0.0", "main-2"]
    assert len(_releases(client, repository=name)) == 2

    # the CLI: list, show by tag, and a manual request for a released commit answers the release
    runner = CliRunner(env={"FORGE_TOKEN": platform.token()})
    listed = runner.invoke(cli, ["release", "list", "-r", name, "--api", platform.api_url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["number"] for r in json.loads(listed.stdout)["items"]] == [2, 1]
    shown = runner.invoke(cli, ["release", "show", name, "hello", "hello/v1.0.0", "--api", platform.api_url])
    assert shown.exit_code == 0, shown.output
    assert f"{'release:':<12}2" in shown.stdout
    again = runner.invoke(cli, ["release", "create", name, "hello", second, "--api", platform.api_url])
    assert again.exit_code == 0, again.output
    assert "already released" in again.stdout
    assert "release 2" in again.stdout


def test_a_manual_release_request_runs_and_releases_only_that_project(platform: Platform, client: httpx.Client) -> None:
    name, sha = make_repo(platform, client, hello_files("manual", manual=True))
    runner = CliRunner(env={"FORGE_TOKEN": platform.token()})
    requested = runner.invoke(cli, ["release", "create", name, "hello", sha, "--api", platform.api_url, "--json"])
    assert requested.exit_code == 0, requested.output
    run_id = json.loads(requested.stdout)["id"]
    run = wait_run(client, run_id, platform, timeout=180)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    assert (run["trigger"], run["release_projects"]) == ("manual", ["hello"])
    (made,) = _releases(client, run_id=run_id)
    assert (made["number"], made["trigger"], made["branch"]) == (1, "manual", None)

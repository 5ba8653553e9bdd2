"""Deployments end to end: a push to main releases the example project and the controller deploys it to dev
by itself (a ReleasePointer commit in the platform's GitOps repository); ``forge-cmp generate``, run the
way Argo CD runs it in that app directory, prints the release's manifests with dev's values; staging
takes the release only once approved; a rollback deploys the earlier digest; production refuses a
release without an approval (409 with the reason).

``tests/golden/deployments/dev-hello.yaml`` holds the render (the registry's address and the test's
repository written as ``<registry>`` and ``<owner>/<repo>``); ``FORGE_UPDATE_GOLDEN=1`` rewrites it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pygit2
from click.testing import CliRunner

from forge.cli.main import cli
from forge.embedded.process import binary
from forge.gitops import ReleasePointer, parse_document
from forge.testing.gitrepos import commit_files
from forge.testing.platform import Platform

from .support import hello_files, make_repo, wait_run, wait_until

GOLDEN = Path(__file__).parents[1] / "golden" / "deployments" / "dev-hello.yaml"


def _released(client: httpx.Client, platform: Platform, name: str, commit: str) -> dict[str, Any]:
    created = client.post("/v1/runs", json={"repository": name, "commit_sha": commit, "branch": "main"})
    assert created.status_code in (200, 201), created.text
    run = wait_run(client, created.json()["id"], platform, timeout=180)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"
    dev = [(d["environment"], d["auto"]) for d in run["discovery"]["deploys"]]
    assert dev == [("dev", True), ("staging", False), ("production", False)]
    (release,) = client.get("/v1/releases", params={"run_id": run["id"]}).json()["items"]
    return dict(release)


def _active(client: httpx.Client, platform: Platform, env: str, name: str, number: int) -> dict[str, Any]:
    """The active deployment of ``hello`` in ``env`` once it is release ``number``."""
    found: dict[str, Any] = {}

    def active() -> bool:
        resp = client.get(f"/v1/deployments/{env}/{name}/hello")
        if resp.status_code == 200 and resp.json()["release_number"] == number:
            found.update(resp.json())
            return True
        return False

    wait_until(active, platform, timeout=60)
    return found


def _checkout(platform: Platform, into: Path) -> Path:
    """A fresh clone of the GitOps repository (what Argo CD's repo server has)."""
    if into.exists():
        subprocess.run(["git", "-C", str(into), "pull", "-q"], check=True)
    else:
        pygit2.clone_repository(platform.gitops_url, str(into))
    return into


def _pointer(checkout: Path, env: str, name: str) -> ReleasePointer:
    path = f"{env}/apps/{name.lower()}/hello/release.yaml"
    return parse_document((checkout / path).read_bytes(), ReleasePointer, path)


def _check_app_of_apps(checkout: Path, env: str, name: str) -> None:
    """The environment's app-of-apps is in the repository and deploys the directory holding the app's Application."""
    root = (checkout / env / "app-of-apps.yaml").read_text()
    assert f"  name: forge-{env}\n" in root
    assert f"    path: {env}/applications\n" in root
    assert (checkout / env / "applications" / f"{name.lower().replace('/', '-')}-hello.yaml").is_file()


def _render(platform: Platform, checkout: Path, env: str, name: str, cache: Path) -> str:
    app = f"{env}/apps/{name.lower()}/hello"
    assert platform.registry_url is not None
    env_vars = {
        "PATH": os.environ["PATH"],
        "ARGOCD_APP_SOURCE_PATH": app,
        "ARGOCD_APP_NAME": f"{name.replace('/', '-')}-hello",
        "FORGE_REGISTRY__URL": platform.registry_url,
        "FORGE_CMP_CACHE": str(cache),
    }
    done = subprocess.run(
        [binary("forge-cmp"), "generate"], cwd=checkout / app, env=env_vars, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_release_to_dev_by_itself_then_staging_with_approval_and_back(
    platform: Platform, client: httpx.Client, tmp_path: Path
) -> None:
    name, first = make_repo(platform, client, hello_files("hello 1"))
    one = _released(client, platform, name, first)
    dev_one = _active(client, platform, "dev", name, 1)
    assert (dev_one["deployed_by"], dev_one["reason"]) == ("forge-controller", "auto-deploy: release 1 on branch main")
    checkout = _checkout(platform, tmp_path / "gitops")
    pointer = _pointer(checkout, "dev", name)
    assert (pointer.spec.digest, pointer.spec.release, pointer.release_number) == (one["oci_digest"], first, 1)
    assert str(pygit2.Repository(str(checkout)).head.target) == dev_one["gitops_commit"]
    _check_app_of_apps(checkout, "dev", name)

    rendered = _render(platform, checkout, "dev", name, tmp_path / "cmp-cache")
    assert platform.registry_url is not None
    text = rendered.replace(urlsplit(platform.registry_url).netloc, "<registry>").replace(name, "<owner>/<repo>")
    if os.environ.get("FORGE_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"{GOLDEN} differs; run with FORGE_UPDATE_GOLDEN=1 and review the diff"
    assert '"replicas": 1' in rendered  # dev's value, typed

    second = commit_files(platform.git_base / f"{name}.git", hello_files("hello 2"), "second")
    two = _released(client, platform, name, second)
    _active(client, platform, "dev", name, 2)

    ask = {"repository": name, "project": "hello", "ref": "2", "environment": "staging", "reason": "promote"}
    refused = client.post("/v1/deployments", json=ask)
    assert refused.status_code == 409, refused.text
    assert "staging needs an active, unexpired approval of release 2" in refused.json()["detail"]

    runner = CliRunner(env={"FORGE_TOKEN": platform.token()})
    api = ["--api", platform.api_url]
    approved = runner.invoke(
        cli, ["approve", name, "hello", "2", "--env", "staging", "--justification", "dev is green", *api]
    )
    assert approved.exit_code == 0, approved.output
    promoted = runner.invoke(cli, ["promote", name, "hello", "--from", "dev", "--to", "staging", *api])
    assert promoted.exit_code == 0, promoted.output
    assert "release 2 of" in promoted.stdout
    assert "active" in promoted.stdout
    staging = _pointer(_checkout(platform, checkout), "staging", name)
    assert (staging.spec.digest, staging.release_number) == (two["oci_digest"], 2)
    _check_app_of_apps(checkout, "staging", name)

    back = runner.invoke(cli, ["rollback", "dev", name, "hello", *api])
    assert back.exit_code == 0, back.output
    assert "release 1 of" in back.stdout
    dev = _pointer(_checkout(platform, checkout), "dev", name)
    assert (dev.spec.digest, dev.release_number) == (one["oci_digest"], 1)
    history = client.get(f"/v1/deployments/dev/{name}/hello/history").json()["items"]
    assert [(d["release_number"], d["status"]) for d in history] == [
        (1, "active"),
        (2, "superseded"),
        (1, "superseded"),
    ]

    production = client.post("/v1/deployments", json={**ask, "environment": "production"})
    assert production.status_code == 409, production.text
    assert production.json()["detail"].startswith("production needs an active, unexpired approval of release 2")

"""The release phase in the WorkflowTemplate: artifact and release tasks, their jobs and their DAG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from forge.adapters.pygit2_git import Pygit2Reader
from forge.discovery import discover
from forge.domain.messages import ArtifactPayload, ReleasePayload
from forge.testing.gitrepos import commit_files
from forge.workflows.templates import TemplateSpec, build_template, validate_workflow_template

RUN = UUID("12345678-1234-5678-1234-567812345678")
API = """\
name: api
phases:
  test:
    steps: [{name: unit, run: pytest}]
release:
  on: [{tag: true}]
artifacts:
  image: {type: container, producer: {run: make image, output: out/image, timeout: 5m, secrets: [REG_TOKEN, NOPE]}}
  cli: {type: binary, producer: {run: make cli, output: out/cli}, publishers: [s3]}
"""


def _template(tmp_path: Path) -> dict[str, Any]:
    repo = tmp_path / "repo.git"
    commit = commit_files(repo, {"api/.forge/project.yaml": API, "web/.forge/project.yaml": "name: web\n"})
    found = discover(Pygit2Reader(repo), commit, None, tag="api/v1.2.3")
    spec = TemplateSpec(
        run_id=RUN,
        repository="acme/mono",
        commit_sha=commit,
        branch=None,
        clone_url="https://git.example/acme/mono.git",
        triggered_by="octocat",
        granted_secrets=frozenset({"REG_TOKEN", "OTHER"}),
        discovery=found,
        step_ids={(s.phase, p.name, s.name): uuid5(RUN, s.name) for p in found.projects for s in p.steps},
    )
    template = build_template(spec)
    validate_workflow_template(template)
    return template


def _dag(template: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in template["spec"]["templates"] if t["name"] == name)
    return found


def _args(task: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in task["arguments"]["parameters"]}


def test_artifacts_then_the_release_run_last_and_not_fail_fast(tmp_path: Path) -> None:
    template = _template(tmp_path)
    assert [t["name"] for t in _dag(template, "main")["dag"]["tasks"]] == ["group-2", "group-3"]
    assert _dag(template, "group-2")["dag"]["failFast"] is True
    release = _dag(template, "group-3")["dag"]
    assert release["failFast"] is False
    tasks = {t["name"]: t for t in release["tasks"]}
    assert list(tasks) == ["release-api-artifact-cli", "release-api-artifact-image", "release-api-release"]
    assert tasks["release-api-artifact-image"]["depends"] == "release-api-artifact-cli"
    assert tasks["release-api-release"]["depends"] == "release-api-artifact-image"

    image = _args(tasks["release-api-artifact-image"])
    assert (image["job-type"], image["key"], image["timeout"]) == ("artifact", f"artifact.{RUN}.api.image.a0", "300")
    payload = ArtifactPayload.model_validate({**json.loads(image["payload"]), "type": "artifact"})
    assert (payload.project, payload.artifact, payload.project_path, payload.attempt) == ("api", "image", "api", 0)
    assert payload.step_execution_id == uuid5(RUN, "artifact-image")
    assert payload.granted_secrets == ["REG_TOKEN"]  # the producer's secrets the repository was granted
    cli = json.loads(_args(tasks["release-api-artifact-cli"])["payload"])
    assert "granted_secrets" not in cli

    rel = _args(tasks["release-api-release"])
    assert (rel["job-type"], rel["key"]) == ("release", f"release.{RUN}.api.a0")
    body = ReleasePayload.model_validate({**json.loads(rel["payload"]), "type": "release"})
    assert (body.trigger, body.tag, body.branch, body.requested_by) == ("tag", "api/v1.2.3", None, "octocat")
    assert body.artifacts == {"cli": f"artifact.{RUN}.api.cli.a0", "image": f"artifact.{RUN}.api.image.a0"}
    assert body.config_blob == payload.config_blob

"""Container templates, retries and timeouts, job keys and payloads, workflow-level fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from forge.domain.discovery import DiscoveredProject, DiscoveredStep, DiscoveryResult
from forge.domain.messages import CiPayload, Job, JobType
from forge.errors import InvalidInputError
from forge.settings import DEFAULT_STEP_IMAGE
from forge.workflows.templates import (
    DEADLINE_GRACE_SECONDS,
    STEP_COMMAND,
    TemplateSpec,
    build_template,
    ci_payload,
    to_yaml,
    validate_workflow_template,
)

MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def _tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        task["name"]: task
        for t in doc["spec"]["templates"]
        if t["name"].startswith("group-")
        for task in t["dag"]["tasks"]
    }


def _args(task: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in task["arguments"]["parameters"]}


def _substitute(text: str, retries: int) -> str:
    """What Argo does to a template with a retryStrategy on attempt ``retries``."""
    return text.replace("{{retries}}", str(retries))


@pytest.fixture
def doc(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> dict[str, Any]:
    result = make_discovery(
        {
            "app": ([], {"test": [("unit", 600, 3), ("e2e", 1800, 0)], "check": [("lint", 600, 3)]}),
            "lib": ([], {"test": [("unit", 600, 0)]}),
        }
    )
    built = build_template(make_spec(result))
    validate_workflow_template(built)
    return built


def test_one_container_template_per_timeout_and_retries(doc: dict[str, Any]) -> None:
    containers = {n: t for n, t in _templates(doc).items() if "container" in t}
    assert sorted(containers) == ["forge-step-t1800-r0", "forge-step-t600-r0", "forge-step-t600-r3"]
    assert containers["forge-step-t600-r3"]["activeDeadlineSeconds"] == 600 + DEADLINE_GRACE_SECONDS
    assert containers["forge-step-t600-r3"]["retryStrategy"] == {
        "limit": 3,
        "retryPolicy": "Always",
        "backoff": {"duration": "10s", "factor": 2, "cap": "1m"},
    }
    assert containers["forge-step-t1800-r0"]["activeDeadlineSeconds"] == 1800 + DEADLINE_GRACE_SECONDS
    assert "retryStrategy" not in containers["forge-step-t1800-r0"]
    tasks = _tasks(doc)
    assert tasks["test-app-unit"]["template"] == "forge-step-t600-r3"
    assert tasks["check-app-lint"]["template"] == "forge-step-t600-r3"
    assert tasks["test-app-e2e"]["template"] == "forge-step-t1800-r0"
    assert tasks["test-lib-unit"]["template"] == "forge-step-t600-r0"
    assert _args(tasks["test-app-e2e"])["timeout"] == "1800"


def test_the_container_runs_forge_step_dispatch(doc: dict[str, Any]) -> None:
    template = _templates(doc)["forge-step-t600-r3"]
    container = template["container"]
    assert container["command"] == STEP_COMMAND
    assert container["command"][:2] == ["forge-step", "dispatch"]
    assert container["image"] == DEFAULT_STEP_IMAGE == "ghcr.io/input-output-hk/catalyst-forge:0.1.0"
    assert container["env"] == [  # the step's NATS user: forge.jobs.nats_permissions
        {"name": "FORGE_NATS__URL", "valueFrom": {"configMapKeyRef": {"name": "forge-step", "key": "nats-url"}}},
        {"name": "FORGE_NATS__USER", "valueFrom": {"configMapKeyRef": {"name": "forge-step", "key": "nats-user"}}},
        {
            "name": "FORGE_NATS__PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "forge-nats-step", "key": "FORGE_NATS__PASSWORD"}},
        },
    ]
    assert [p["name"] for p in template["inputs"]["parameters"]] == [
        "job-type",
        "key",
        "payload",
        "timeout",
        "phase",
        "project",
        "step",
    ]
    assert template["metadata"]["labels"]["forge.projectcatalyst.io/project"] == "{{inputs.parameters.project}}"


@pytest.mark.parametrize("attempt", [0, 3])
def test_key_and_payload_after_substitution(doc: dict[str, Any], attempt: int) -> None:
    args = _args(_tasks(doc)["test-app-unit"])
    assert args["job-type"] == "ci"
    key = _substitute(args["key"], attempt)
    assert key == f"ci.11111111-2222-3333-4444-555555555555.test.app.unit.a{attempt}"
    payload = CiPayload.model_validate_json(_substitute(args["payload"], attempt))
    assert payload.attempt == attempt
    assert (payload.phase, payload.project, payload.step, payload.project_path) == ("test", "app", "unit", "p/app")
    assert (payload.timeout_seconds, payload.retries, payload.clone_url) == (600, 3, "/srv/git/acme-mono.git")
    assert payload.step_execution_id is not None
    # the command line forge-step parses would accept this job
    Job.model_validate(
        {
            "key": key,
            "type": JobType.CI,
            "run_id": "11111111-2222-3333-4444-555555555555",
            "repository": "acme/mono",
            "commit_sha": "c" * 40,
            "payload": {"type": "ci", **json.loads(_substitute(args["payload"], attempt))},
            "deadline": "2030-01-01T00:00:00Z",
        }
    )


def test_a_step_without_retries_has_a_literal_attempt(doc: dict[str, Any]) -> None:
    args = _args(_tasks(doc)["test-app-e2e"])
    assert args["key"].endswith(".test.app.e2e.a0")
    assert "{{" not in args["payload"]
    assert json.loads(args["payload"])["attempt"] == 0


def test_user_text_never_forms_an_argo_expression() -> None:
    nasty = "echo '{{inputs.parameters.key}}' {{=sprig.x}} \"quoted\" \\ back"
    step = DiscoveredStep(
        phase="test", name="unit", action="run", target=nasty, env={"X": "{{workflow.name}}"}, timeout_seconds=60
    )
    project = DiscoveredProject(name="app", path="app", config_blob="0" * 40, steps=[step])
    text = ci_payload(project, step, "/srv/git/x.git", UUID(int=7))
    assert "{{" not in text
    assert "\\u007b\\u007binputs.parameters.key\\u007d\\u007d" in text
    decoded = json.loads(text)
    assert decoded["target"] == nasty
    assert decoded["env"] == {"X": "{{workflow.name}}"}


def test_a_job_key_past_200_characters_is_refused(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    long = "x" * 63
    result = make_discovery({long: ([], {long: [(long, 60, 0)]})}, groups={long: 1})
    with pytest.raises(InvalidInputError, match="exceeds 200 characters"):
        build_template(make_spec(result))


def test_workflow_level_fields(doc: dict[str, Any]) -> None:
    assert doc["kind"] == "WorkflowTemplate"
    assert doc["metadata"]["name"] == "forge-run-11111111-2222-3333-4444-555555555555"
    assert doc["metadata"]["namespace"] == "forge"
    spec = doc["spec"]
    assert spec["activeDeadlineSeconds"] == 86400
    assert spec["parallelism"] == 100
    assert spec["podGC"] == {"strategy": "OnPodCompletion"}
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert {p["name"]: p["value"] for p in spec["arguments"]["parameters"]} == {
        "run-id": "11111111-2222-3333-4444-555555555555",
        "repository": "acme/mono",
        "commit": "c0ffee" + "0" * 34,
        "branch": "main",
        "pool": "default",
    }
    labels = doc["metadata"]["labels"]
    assert labels["forge.projectcatalyst.io/run-id"] == "11111111-2222-3333-4444-555555555555"
    assert labels["forge.projectcatalyst.io/repository"].startswith("acme.mono-")
    assert all(_LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values())
    assert doc["metadata"]["annotations"]["forge.projectcatalyst.io/repository"] == "acme/mono"
    assert spec["workflowMetadata"]["labels"] == labels
    assert spec["podMetadata"]["labels"] == {"forge.projectcatalyst.io/run-id": "11111111-2222-3333-4444-555555555555"}
    assert "serviceAccountName" not in spec


def test_options_and_purity(make_discovery: MakeDiscovery, make_spec: MakeSpec) -> None:
    result = make_discovery({"lib": ([], {"test": [("unit", 60, 0)]})})
    spec = make_spec(
        result, parallelism=7, namespace="ci", service_account="forge-runner", image="registry.local/step:1"
    )
    first, second = build_template(spec), build_template(spec)
    assert first == second
    assert to_yaml(first) == to_yaml(second)
    assert first["spec"]["parallelism"] == 7
    assert first["metadata"]["namespace"] == "ci"
    assert first["spec"]["serviceAccountName"] == "forge-runner"
    assert _templates(first)["forge-step-t60-r0"]["container"]["image"] == "registry.local/step:1"


def test_a_payload_carries_only_the_granted_secrets_its_step_names() -> None:
    step = DiscoveredStep(
        phase="test", name="unit", action="run", target="true", secrets=["NPM_TOKEN", "DEPLOY_KEY"], timeout_seconds=60
    )
    project = DiscoveredProject(name="app", path="app", config_blob="0" * 40, steps=[step])
    granted = frozenset({"NPM_TOKEN", "OTHER_TOKEN"})
    decoded = json.loads(ci_payload(project, step, "/srv/git/x.git", UUID(int=7), granted))
    assert decoded["secrets"] == ["NPM_TOKEN", "DEPLOY_KEY"]
    assert decoded["granted_secrets"] == ["NPM_TOKEN"]  # DEPLOY_KEY is not granted; OTHER_TOKEN not named
    # no grant: the field is left out (templates of repositories without grants are unchanged), read as none
    plain = json.loads(ci_payload(project, step, "/srv/git/x.git", UUID(int=7)))
    assert "granted_secrets" not in plain
    assert CiPayload.model_validate(plain).granted_secrets == []

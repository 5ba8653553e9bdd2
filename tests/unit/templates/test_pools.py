"""The run's worker pool travels in the WorkflowTemplate (a workflow parameter the step command passes to
``forge-step dispatch --pool``), so every job of the run — CI, artifact and release alike — is published on
``<type prefix>.<pool>.…`` and only that pool's workers take it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from forge.domain.discovery import DiscoveryResult
from forge.domain.messages import DiscoveryPayload, Job, JobType
from forge.settings import TimeoutSettings
from forge.workflows.steps.entry import parse_job
from forge.workflows.templates import STEP_COMMAND, TemplateSpec, build_template

MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]


def _argv(doc: dict[str, Any], task: dict[str, Any]) -> list[str]:
    """The step container's command line as Argo runs it: inputs and workflow parameters substituted."""
    workflow = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    inputs = {p["name"]: p["value"] for p in task["arguments"]["parameters"]}
    scope = {f"workflow.parameters.{k}": v for k, v in workflow.items()}
    scope |= {f"inputs.parameters.{k}": v for k, v in inputs.items()} | {"retries": "0"}
    argv = []
    for word in STEP_COMMAND[2:]:  # after "forge-step dispatch"
        text = word
        for name, value in scope.items():
            text = text.replace(f"{{{{{name}}}}}", value)
        argv.append(text)
    return ["dispatch", *argv]


def _jobs(doc: dict[str, Any]) -> list[Job]:
    tasks = [task for t in doc["spec"]["templates"] if t["name"].startswith("group-") for task in t["dag"]["tasks"]]
    return [parse_job(_argv(doc, task), TimeoutSettings())[0] for task in tasks]


def test_every_job_of_a_run_is_published_on_its_repositorys_pool(
    make_discovery: MakeDiscovery, make_spec: MakeSpec
) -> None:
    result = make_discovery({"app": ([], {"test": [("unit", 600, 2)]}), "lib": ([], {"test": [("unit", 60, 0)]})})
    doc = build_template(make_spec(result, pool="org-b"))
    assert {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}["pool"] == "org-b"
    jobs = _jobs(doc)
    assert len(jobs) == 2
    for job in jobs:
        assert job.pool == "org-b"
        assert job.subject.startswith(f"pipeline.tasks.org-b.{job.run_id}.")


def test_a_repository_in_the_default_pool_publishes_on_default(
    make_discovery: MakeDiscovery, make_spec: MakeSpec
) -> None:
    doc = build_template(make_spec(make_discovery({"app": ([], {"test": [("unit", 600, 0)]})})))
    (job,) = _jobs(doc)
    assert job.subject == f"pipeline.tasks.default.{job.key.removeprefix('ci.')}"


def test_a_command_line_without_pool_is_the_default_pool_and_a_bad_pool_is_a_usage_error() -> None:
    run = uuid4()
    argv = ["dispatch", "--job-type", "discovery", "--key", f"discovery.{run}", "--run-id", str(run)]
    argv += ["--repository", "acme/mono", "--commit", "a" * 40, "--payload", '{"clone_url": "/x"}']
    job = parse_job(argv, TimeoutSettings())[0]  # a template built before pools existed
    assert (job.pool, job.subject) == ("default", f"pipeline.discovery.default.{run}")
    expected = Job(
        key=f"discovery.{run}", type=JobType.DISCOVERY, run_id=run, repository="acme/mono", commit_sha="a" * 40,
        payload=DiscoveryPayload(clone_url="/x"), deadline=datetime.now(UTC), pool="org-b",
    )  # fmt: skip
    assert parse_job([*argv, "--pool", "org-b"], TimeoutSettings())[0].subject == expected.subject

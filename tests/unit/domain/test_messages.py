from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from forge.domain.messages import (
    STREAMS,
    CiPayload,
    DiscoveryPayload,
    Job,
    JobType,
    Result,
    check_pool,
    job_subject,
    pool_filter,
    result_subject,
)


def _job(**overrides: object) -> Job:
    run = uuid4()
    fields: dict[str, object] = {
        "key": f"discovery.{run}",
        "type": JobType.DISCOVERY,
        "run_id": run,
        "repository": "o/r",
        "commit_sha": "a" * 40,
        "payload": DiscoveryPayload(clone_url="/tmp/x"),
        "deadline": datetime.now(UTC),
    }
    fields.update(overrides)
    return Job.model_validate(fields)


def test_job_round_trips_through_json_with_its_payload_type() -> None:
    job = _job()
    again = Job.model_validate_json(job.model_dump_json())
    assert again == job
    assert isinstance(again.payload, DiscoveryPayload)
    assert job.pool == "default"
    assert job.subject == f"pipeline.discovery.default.{job.run_id}"


def test_every_job_type_puts_its_pool_first_after_the_type_prefix() -> None:
    discovery = _job(pool="org-b")
    assert discovery.subject == f"pipeline.discovery.org-b.{discovery.run_id}"
    payload = CiPayload(
        clone_url="/x", phase="test", project="app", project_path="app", step="unit", action="run", target="true",
        timeout_seconds=60,
    )  # fmt: skip
    ci = _job(key=f"ci.{discovery.run_id}.test.app.unit.a0", type=JobType.CI, payload=payload, pool="org-b")
    assert ci.subject == f"pipeline.tasks.org-b.{discovery.run_id}.test.app.unit.a0"
    for job_type in JobType:
        assert pool_filter(job_type, "org-b") == f"{job_subject(job_type, 'org-b')}.>"
    assert pool_filter(JobType.DEPLOY, "org-b") == "pipeline.releases.deploy.org-b.>"


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        ("", "not a pool name"),
        ("Org", "not a pool name"),
        ("a.b", "not a pool name"),
        ("a*", "not a pool name"),
        (">", "not a pool name"),
        ("-a", "not a pool name"),
        ("a-", "not a pool name"),
        ("a b", "not a pool name"),
        ("x" * 33, "not a pool name"),
        ("deploy", "reserved"),
    ],
)
def test_pool_names_are_subject_tokens_and_kubernetes_name_parts(pool: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_pool(pool)
    with pytest.raises(ValidationError, match=reason):
        _job(pool=pool)


def test_pool_names_that_are_allowed() -> None:
    for pool in ("default", "a", "org-b", "x" * 32, "team-42"):
        assert check_pool(pool) == pool


def test_subjects_of_every_type_fall_into_a_stream() -> None:
    prefixes = {s.subjects[0].removesuffix(">") for s in STREAMS}
    for job_type in JobType:
        subject = job_subject(job_type, "run", "x")
        assert any(subject.startswith(p) for p in prefixes), subject
    assert job_subject(JobType.CI, "r") == "pipeline.tasks.r"
    assert result_subject("ci.r.x") == "pipeline.results.ci.r.x"


@pytest.mark.parametrize("token", ["a.b", "a b", "*", ">", ""])
def test_subject_tokens_are_checked(token: str) -> None:
    with pytest.raises(ValueError, match="invalid subject token"):
        job_subject(JobType.CI, token)


def test_unknown_version_and_bad_key_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Job.model_validate({**_job().model_dump(mode="json"), "version": 2})
    with pytest.raises(ValidationError):
        _job(key="bad key!")


def test_payload_type_must_match_discriminator() -> None:
    payload = CiPayload(
        clone_url="/x",
        phase="test",
        project="p",
        project_path="p",
        step="s",
        action="run",
        target="true",
        timeout_seconds=60,
    )
    job = _job(type=JobType.CI, key="ci.r.test.p.s", payload=payload)
    assert Job.model_validate_json(job.model_dump_json()).payload == payload


def test_result_with_error() -> None:
    result = Result.model_validate(
        {"job_id": str(uuid4()), "key": "k", "success": False, "error": {"code": "x", "message": "m"}}
    )
    assert result.error is not None
    assert result.error.permanent

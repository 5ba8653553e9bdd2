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
    job_subject,
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
    assert job.subject == f"pipeline.discovery.{job.run_id}"


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

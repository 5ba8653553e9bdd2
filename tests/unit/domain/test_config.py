from __future__ import annotations

import pytest
from pydantic import ValidationError

from forge.domain.config import DEFAULT_PHASES, ProjectConfig, RepoConfig, StepConfig, duration_seconds


def test_repo_defaults() -> None:
    repo = RepoConfig()
    assert repo.phases == DEFAULT_PHASES
    assert {n: p.group for n, p in repo.phases.items()} == {"check": 1, "build": 1, "test": 2, "package": 3}
    assert [n for n, e in sorted(repo.environments.items(), key=lambda kv: kv[1].order)] == [
        "dev",
        "staging",
        "production",
    ]
    assert repo.environments["dev"].auto_deploy
    assert repo.environments["production"].requires_approval


def test_step_needs_exactly_one_action() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'run' or 'earthly'"):
        StepConfig(name="x")
    with pytest.raises(ValidationError, match="exactly one of 'run' or 'earthly'"):
        StepConfig(name="x", run="true", earthly="+x")
    step = StepConfig(name="x", earthly="+test")
    assert (step.action, step.target) == ("earthly", "+test")


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ProjectConfig.model_validate({"name": "a", "phase": {}})


@pytest.mark.parametrize("name", ["A", "1a", "a_b", "", "a" * 64])
def test_project_names(name: str) -> None:
    with pytest.raises(ValidationError):
        ProjectConfig(name=name)


def test_duplicate_step_names_rejected() -> None:
    with pytest.raises(ValidationError, match="duplicate step name 'x'"):
        ProjectConfig.model_validate({"name": "a", "phases": {"test": {"steps": [{"name": "x", "run": "a"}] * 2}}})


def test_release_rules() -> None:
    with pytest.raises(ValidationError, match="exactly one of branch, tag or manual"):
        ProjectConfig.model_validate({"name": "a", "release": {"on": [{"branch": "main", "tag": True}]}})
    with pytest.raises(ValidationError, match="not a valid regex"):
        ProjectConfig.model_validate({"name": "a", "release": {"on": [{"branch": "(("}]}})


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds

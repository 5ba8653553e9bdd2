"""Deploy intents: where each released project may go, from ``.forge/repo.yaml`` ``environments``."""

from __future__ import annotations

from forge.discovery.releases import deploy_intents
from forge.domain.config import EnvironmentConfig, EnvironmentTrigger, RepoConfig
from forge.domain.discovery import ReleaseIntent


def _push(branch: str, project: str = "web") -> ReleaseIntent:
    return ReleaseIntent(project=project, trigger="push", reason="r", branch=branch)


def test_default_environments_auto_deploy_dev_and_need_approval_elsewhere() -> None:
    intents = deploy_intents([_push("main")], RepoConfig().environments)
    assert [(i.environment, i.allowed, i.auto, i.requires_approval) for i in intents] == [
        ("dev", True, True, False),
        ("staging", True, False, True),
        ("production", True, False, True),
    ]


def test_branches_and_triggers_decide_what_an_environment_takes() -> None:
    environments = {
        "dev": EnvironmentConfig(order=0, auto_deploy=True, branches=["main", "release/.*"]),
        "prod": EnvironmentConfig(order=1, requires_approval=True, triggers=[EnvironmentTrigger(tag=True)]),
    }
    feature = deploy_intents([_push("feature/x")], environments)
    assert [(i.environment, i.allowed, i.auto) for i in feature] == [("dev", False, False), ("prod", False, False)]
    assert feature[0].reason == "branch feature/x matches none of: main, release/.*"
    assert feature[1].reason == "branch feature/x matches none of: tag releases"
    release = deploy_intents([_push("release/1")], environments)
    assert (release[0].allowed, release[0].auto) == (True, True)
    assert release[0].reason == "branch release/1 matches release/.*"
    tag = deploy_intents([ReleaseIntent(project="web", trigger="tag", reason="r", tag="web/v1.0.0")], environments)
    assert [(i.environment, i.allowed) for i in tag] == [("dev", False), ("prod", True)]
    assert tag[1].reason == "tag web/v1.0.0 (trigger tag: true)"


def test_no_release_no_intent() -> None:
    assert deploy_intents([], RepoConfig().environments) == []

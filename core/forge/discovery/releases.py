"""What a run releases: ``release.on`` rules evaluated against the run's ref, and the checks of
``artifacts`` and ``deploy`` that must hold before anything is built (DESIGN §3).

A rule releases a project when:

- ``branch: <regex>``: the run is for a branch the regex fully matches, and the project is affected
  (an unchanged project is not released again on every push);
- ``tag: true``: the run is for a tag naming the project, per ``tagging.strategy`` — ``monorepo``:
  ``<project>/v<semver>``; ``tag-all``: ``v<semver>`` releases every project with a tag rule;
- ``manual: true``: a manual release of the project was requested (``POST /v1/releases``); a request
  for a project without that rule, or for no project at all, is a configuration error of the run.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from forge.discovery.checks import ProjectFile
from forge.domain.config import (
    BUILTIN_PUBLISHERS,
    RELEASE_PHASE,
    EnvironmentConfig,
    ProjectConfig,
    RepoConfig,
    TaggingStrategy,
    duration_seconds,
)
from forge.domain.discovery import DeployIntent, DiscoveredProject, DiscoveredStep, PhaseGroup, ReleaseIntent
from forge.errors import ConfigIssue
from forge.releases.expressions import check_references

__all__ = [
    "ARTIFACT_TIMEOUT",
    "RELEASE_TIMEOUT",
    "SEMVER",
    "check_release_config",
    "deploy_intents",
    "release_intents",
    "release_phase",
    "unknown_release_requests",
]

ARTIFACT_TIMEOUT = 1200
"""Seconds an artifact's producer and publishing may take unless its producer sets a timeout (DESIGN §6)."""
RELEASE_TIMEOUT = 900

SEMVER = r"v(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
_TAG_ALL = re.compile(SEMVER)


def check_release_config(projects: Sequence[ProjectFile], repo: RepoConfig) -> list[ConfigIssue]:
    """Unknown publishers of artifacts, and ``${{ artifacts.* }}`` references in ``deploy.resources``
    that name no artifact of the project or no field of one."""
    known = sorted({*BUILTIN_PUBLISHERS, *repo.publishers})
    issues: list[ConfigIssue] = []
    for project in projects:
        config = project.loaded.config
        if config is None:
            continue
        for name, artifact in config.artifacts.items():
            for index, publisher in enumerate(artifact.publishers):
                if publisher not in known:
                    field = f"artifacts.{name}.publishers.{index}"
                    reason = f"unknown publisher {publisher!r}; known: {', '.join(known)}"
                    issues.append(ConfigIssue(project.path, project.loaded.line(field), field, reason))
        if config.deploy is not None:
            for location, reason in check_references(config.deploy.resources, config.artifacts):
                field = _dotted(location)
                issues.append(ConfigIssue(project.path, project.loaded.line(field), field, reason))
    return issues


def _dotted(location: str) -> str:
    """``deploy.resources[0].spec.image`` → ``deploy.resources.0.spec.image`` (the loader's key form)."""
    return re.sub(r"\[(\d+)\]", r".\1", location)


def unknown_release_requests(projects: Sequence[ProjectFile], requested: Collection[str]) -> list[ConfigIssue]:
    """A manual release request for a project that does not exist or has no ``manual: true`` rule."""
    by_name = {p.loaded.config.name: p for p in projects if p.loaded.config is not None}
    issues: list[ConfigIssue] = []
    for name in sorted(set(requested)):
        project = by_name.get(name)
        if project is None:
            reason = f"a manual release of {name!r} was requested, but no project has that name"
            issues.append(ConfigIssue(".forge", None, "", reason))
        elif not _has_rule(project.loaded.config, "manual"):
            line = project.loaded.line("release") or project.loaded.line("name")
            reason = f"a manual release of {name!r} was requested; add '{{manual: true}}' to release.on to allow it"
            issues.append(ConfigIssue(project.path, line, "release.on", reason))
    return issues


def _has_rule(config: ProjectConfig | None, kind: str) -> bool:
    return config is not None and config.release is not None and any(getattr(rule, kind) for rule in config.release.on)


def release_intents(
    configs: Sequence[ProjectConfig],
    affected: Collection[str],
    *,
    branch: str | None,
    tag: str | None,
    strategy: TaggingStrategy,
    requested: Collection[str] = (),
) -> list[ReleaseIntent]:
    """One intent per released project (by name), the first matching rule giving its reason."""
    intents: list[ReleaseIntent] = []
    for config in sorted(configs, key=lambda c: c.name):
        intent = _intent(config, affected, branch, tag, strategy, requested)
        if intent is not None:
            intents.append(intent)
    return intents


def _intent(
    config: ProjectConfig,
    affected: Collection[str],
    branch: str | None,
    tag: str | None,
    strategy: TaggingStrategy,
    requested: Collection[str],
) -> ReleaseIntent | None:
    if config.release is None:
        return None
    for rule in config.release.on:
        if rule.manual and config.name in requested:
            return ReleaseIntent(
                project=config.name, trigger="manual", reason="manual release requested", branch=branch, tag=tag
            )
        if rule.tag and tag is not None and _tag_names(tag, config.name, strategy):
            reason = f"tag {tag} ({strategy.value} tagging)"
            return ReleaseIntent(project=config.name, trigger="tag", reason=reason, tag=tag)
        if (
            rule.branch is not None
            and branch is not None
            and config.name in affected
            and re.fullmatch(rule.branch, branch)
            and not requested
        ):
            reason = f"branch {branch} matches {rule.branch}"
            return ReleaseIntent(project=config.name, trigger="push", reason=reason, branch=branch)
    return None


def deploy_intents(
    intents: Sequence[ReleaseIntent], environments: Mapping[str, EnvironmentConfig]
) -> list[DeployIntent]:
    """For each released project, one intent per environment (by order, then name): whether the release
    may go there and whether it goes by itself. An environment with neither ``branches`` nor ``triggers``
    takes every release; otherwise a release matches when its branch fully matches one of ``branches``
    or a trigger (``branch: <regex>``, ``tag: true`` for tag releases) matches it."""
    found: list[DeployIntent] = []
    ordered = sorted(environments.items(), key=lambda item: (item[1].order, item[0]))
    for intent in intents:
        for name, env in ordered:
            allowed, reason = _environment_takes(env, intent)
            found.append(
                DeployIntent(
                    project=intent.project,
                    environment=name,
                    order=env.order,
                    allowed=allowed,
                    auto=allowed and env.auto_deploy,
                    requires_approval=env.requires_approval,
                    reason=reason,
                )
            )
    return found


def _environment_takes(env: EnvironmentConfig, intent: ReleaseIntent) -> tuple[bool, str]:
    if not env.branches and not env.triggers:
        return True, "the environment takes every release (no branches or triggers)"
    branch = intent.branch
    for pattern in env.branches:
        if branch is not None and re.fullmatch(pattern, branch):
            return True, f"branch {branch} matches {pattern}"
    for trigger in env.triggers:
        if trigger.branch is not None and branch is not None and re.fullmatch(trigger.branch, branch):
            return True, f"branch {branch} matches trigger {trigger.branch}"
        if trigger.tag and intent.trigger == "tag":
            return True, f"tag {intent.tag} (trigger tag: true)"
    wanted = [*env.branches, *(t.branch for t in env.triggers if t.branch is not None)]
    wanted += ["tag releases"] if any(t.tag for t in env.triggers) else []
    what = f"branch {branch}" if branch is not None else f"tag {intent.tag}" if intent.tag else "a release"
    return False, f"{what} matches none of: {', '.join(wanted)}"


def _tag_names(tag: str, project: str, strategy: TaggingStrategy) -> bool:
    if strategy is TaggingStrategy.TAG_ALL:
        return _TAG_ALL.fullmatch(tag) is not None
    prefix, _, version = tag.rpartition("/")
    return prefix == project and _TAG_ALL.fullmatch(version) is not None


def release_phase(
    projects: Sequence[DiscoveredProject],
    configs: Mapping[str, ProjectConfig],
    intents: Sequence[ReleaseIntent],
    groups: Sequence[PhaseGroup],
) -> tuple[list[DiscoveredProject], list[PhaseGroup]]:
    """The run's last phase, ``release``, when it releases anything: for each released project one
    ``artifact-<name>`` step per artifact (action ``artifact``), then a ``release`` step (action
    ``release``). It runs after every other phase group succeeded, so a project is released only
    from a run whose checks all passed."""
    if not intents:
        return list(projects), list(groups)
    released = {intent.project for intent in intents}
    updated: list[DiscoveredProject] = []
    for project in projects:
        if project.name not in released:
            updated.append(project)
            continue
        config = configs[project.name]
        steps = [
            DiscoveredStep(
                phase=RELEASE_PHASE,
                name=f"artifact-{name}",
                action="artifact",
                target=name,
                secrets=list(artifact.producer.secrets),
                timeout_seconds=duration_seconds(artifact.producer.timeout)
                if artifact.producer.timeout
                else ARTIFACT_TIMEOUT,
            )
            for name, artifact in sorted(config.artifacts.items())
        ]
        steps.append(
            DiscoveredStep(
                phase=RELEASE_PHASE,
                name="release",
                action="release",
                target=project.name,
                timeout_seconds=RELEASE_TIMEOUT,
            )
        )
        phases = {**project.phases, RELEASE_PHASE: [s.name for s in steps]}
        updated.append(project.model_copy(update={"steps": [*project.steps, *steps], "phases": phases}))
    last = max((g.group for g in groups), default=0)
    return updated, [*groups, PhaseGroup(group=last + 1, phases=[RELEASE_PHASE])]

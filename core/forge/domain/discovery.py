"""The discovery result: what a commit holds and what a change affects (DESIGN §3)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AffectedProject",
    "DeployIntent",
    "DiscoveredArtifact",
    "DiscoveredProject",
    "DiscoveredStep",
    "DiscoveryResult",
    "PhaseGroup",
    "ReleaseIntent",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscoveredStep(_Model):
    phase: str
    name: str
    action: str = Field(description="run | earthly (CI steps); artifact | release (the release phase)")
    target: str = Field(description="The shell command or the Earthly target")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    timeout_seconds: int
    retries: int = 0


class DiscoveredArtifact(_Model):
    name: str
    type: Literal["container", "binary", "archive"]


class DiscoveredProject(_Model):
    name: str
    path: str = Field(description="Repo-relative directory of the project ('.' for the root)")
    config_blob: str = Field(description="Git blob id of the project's .forge/project.yaml")
    depends_on: list[str] = Field(default_factory=list)
    phases: dict[str, list[str]] = Field(default_factory=dict, description="phase -> step names, in order")
    steps: list[DiscoveredStep] = Field(default_factory=list)
    artifacts: list[DiscoveredArtifact] = Field(default_factory=list, description="By name")


class ReleaseIntent(_Model):
    """A release this run makes once all of the project's phases succeed (from ``release.on``)."""

    project: str
    trigger: Literal["push", "tag", "manual"]
    reason: str = Field(description="Which rule matched, e.g. 'branch main matches ^main$'")
    branch: str | None = None
    tag: str | None = None


class DeployIntent(_Model):
    """Where a project this run releases may go: one per (released project, environment of
    ``.forge/repo.yaml``), evaluated like release intents against the run's branch or tag."""

    project: str
    environment: str
    order: int = Field(description="Promotion order of the environment, lowest first")
    allowed: bool = Field(description="The release matches the environment's branches/triggers")
    auto: bool = Field(description="Deployed once released, without a request (auto_deploy and allowed)")
    requires_approval: bool = Field(description="A deployment needs an active, unexpired approval")
    reason: str = Field(description="Why it is allowed or not, e.g. 'branch main matches ^main$'")


class AffectedProject(_Model):
    project: str
    reasons: list[str] = Field(min_length=1)


class PhaseGroup(_Model):
    group: int
    phases: list[str]


class DiscoveryResult(_Model):
    commit: str
    base: str | None
    branch: str | None = None
    repository: str | None = Field(None, description="owner/repo from .forge/repo.yaml, when set")
    projects: list[DiscoveredProject]
    affected: list[AffectedProject]
    phase_groups: list[PhaseGroup]
    changed_files: int = Field(0, description="Number of paths that differ between base and commit")
    tag: str | None = Field(None, description="The tag the run is for")
    releases: list[ReleaseIntent] = Field(default_factory=list, description="Releases the run makes, by project")
    deploys: list[DeployIntent] = Field(
        default_factory=list, description="Where each released project may be deployed, by project and environment"
    )

    def affected_names(self) -> list[str]:
        return [a.project for a in self.affected]

"""The discovery result: what a commit holds and what a change affects (DESIGN §3)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AffectedProject",
    "DiscoveredProject",
    "DiscoveredStep",
    "DiscoveryResult",
    "PhaseGroup",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscoveredStep(_Model):
    phase: str
    name: str
    action: str = Field(description="run | earthly")
    target: str = Field(description="The shell command or the Earthly target")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    timeout_seconds: int
    retries: int = 0


class DiscoveredProject(_Model):
    name: str
    path: str = Field(description="Repo-relative directory of the project ('.' for the root)")
    config_blob: str = Field(description="Git blob id of the project's .forge/project.yaml")
    depends_on: list[str] = Field(default_factory=list)
    phases: dict[str, list[str]] = Field(default_factory=dict, description="phase -> step names, in order")
    steps: list[DiscoveredStep] = Field(default_factory=list)
    release_triggered: bool = False


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

    def affected_names(self) -> list[str]:
        return [a.project for a in self.affected]

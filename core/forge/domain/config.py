"""Models of ``.forge/repo.yaml`` and ``<project>/.forge/project.yaml`` (DESIGN §3).

Unknown keys are errors (``extra="forbid"``) so a typo never silently disables a step.
``forge schema`` publishes the JSON Schemas of ``RepoConfig`` and ``ProjectConfig``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

__all__ = [
    "BUILTIN_PUBLISHERS",
    "DEFAULT_PHASES",
    "RELEASE_PHASE",
    "ArtifactConfig",
    "EnvironmentConfig",
    "PhaseConfig",
    "ProducerConfig",
    "ProjectConfig",
    "ProjectPhase",
    "PublisherConfig",
    "ReleaseConfig",
    "ReleaseRule",
    "RepoConfig",
    "StepConfig",
    "TaggingConfig",
]

NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
RELEASE_PHASE = "release"
"""The last phase of a run that releases: each released project's artifacts, then its Release OCI."""
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
Duration = Annotated[str, StringConstraints(pattern=r"^\d+(s|m|h)$")]
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(value: str) -> int:
    """``"90s"``, ``"30m"``, ``"2h"`` → seconds."""
    return int(value[:-1]) * _DURATION_UNITS[value[-1]]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseConfig(_Config):
    group: int = Field(ge=1, le=100, description="Phases of one group run in parallel; groups run in order")
    timeout: Duration = Field("30m", description="Deadline of each step of this phase unless the step sets one")
    required: bool = Field(True, description="A failure of this phase fails the run")


DEFAULT_PHASES: dict[str, PhaseConfig] = {
    "check": PhaseConfig(group=1),
    "build": PhaseConfig(group=1),
    "test": PhaseConfig(group=2),
    "package": PhaseConfig(group=3),
}


class TaggingStrategy(StrEnum):
    MONOREPO = "monorepo"
    TAG_ALL = "tag-all"


class TaggingConfig(_Config):
    strategy: TaggingStrategy = Field(TaggingStrategy.MONOREPO, description="How git tags map to releases")


class PublisherConfig(_Config):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["oci", "s3"] = Field(description="Kind of publisher")


class EnvironmentTrigger(_Config):
    branch: str | None = Field(None, description="Regex of branches whose releases deploy here")
    tag: bool | None = Field(None, description="Releases from tags deploy here")


class EnvironmentConfig(_Config):
    order: int = Field(ge=0, description="Promotion order, lowest first")
    auto_deploy: bool = Field(False, description="Deploy new releases without a request")
    requires_approval: bool = Field(False, description="Deployments need an active approval")
    branches: list[str] = Field(default_factory=list, description="Regexes of branches allowed here")
    triggers: list[EnvironmentTrigger] = Field(default_factory=list, description="What deploys here")


def _default_environments() -> dict[str, EnvironmentConfig]:
    return {
        "dev": EnvironmentConfig(order=0, auto_deploy=True),
        "staging": EnvironmentConfig(order=1, requires_approval=True),
        "production": EnvironmentConfig(order=2, requires_approval=True),
    }


class RepoConfig(_Config):
    """``.forge/repo.yaml`` at the repository root; every field has a default."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="owner/repo"
    )
    tagging: TaggingConfig = Field(default_factory=TaggingConfig)
    phases: dict[Name, PhaseConfig] = Field(default_factory=lambda: dict(DEFAULT_PHASES))

    @field_validator("phases")
    @classmethod
    def _release_is_reserved(cls, phases: dict[str, PhaseConfig]) -> dict[str, PhaseConfig]:
        if RELEASE_PHASE in phases:
            raise ValueError(f"the phase name {RELEASE_PHASE!r} is reserved for the artifact and release work of a run")
        return phases

    publishers: dict[Name, PublisherConfig] = Field(default_factory=dict)
    environments: dict[Name, EnvironmentConfig] = Field(default_factory=_default_environments)
    affects_all: list[str] = Field(default_factory=list, description="Globs whose change marks every project affected")


class _Action(_Config):
    """What runs: a shell command or an Earthly target, with its arguments, environment and secrets."""

    run: str | None = Field(None, min_length=1, description="Shell command run in the project directory")
    earthly: Annotated[str, StringConstraints(pattern=r"^\+[A-Za-z0-9_-]+$")] | None = Field(
        None, description="Earthly target of the project's Earthfile, e.g. +test"
    )
    args: list[str] = Field(default_factory=list, description="Extra arguments")
    env: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, description="Names resolved by the SecretProvider")
    timeout: Duration | None = Field(None, description="Step deadline; the phase timeout when unset")

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if (self.run is None) == (self.earthly is None):
            raise ValueError("exactly one of 'run' or 'earthly' must be set")
        return self

    @property
    def action(self) -> str:
        return "run" if self.run is not None else "earthly"

    @property
    def target(self) -> str:
        return self.run if self.run is not None else str(self.earthly)


class StepConfig(_Action):
    name: Name
    retries: int = Field(0, ge=0, le=10, description="Extra attempts after a failure")


def _relative_path(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or not all(parts):
        raise ValueError("must be a relative path inside the project, without '..' or empty parts")
    return value


RelativePath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$", min_length=1, max_length=1024),
    AfterValidator(_relative_path),
]


class ProducerConfig(_Action):
    """How an artifact is built: a step run in the project directory that leaves ``output`` behind."""

    output: RelativePath = Field(
        description="Project-relative path the producer writes: an OCI image-layout directory (container) or a "
        "file (binary, archive); no '..', not absolute"
    )


class ProjectPhase(_Config):
    steps: list[StepConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_steps(self) -> Self:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            seen.add(step.name)
        return self


BUILTIN_PUBLISHERS = ("oci", "s3")
"""Publishers every repository has: the platform's OCI registry and its object store."""


class ArtifactConfig(_Config):
    type: Literal["container", "binary", "archive"] = Field(
        description="container: an OCI image layout; binary, archive: one file"
    )
    producer: ProducerConfig
    publishers: list[Name] = Field(
        default_factory=lambda: ["oci"],
        description="Where the artifact is published: oci, s3 or a publisher of .forge/repo.yaml. Every artifact "
        "also gets a tracking image <registry>/<owner>/<repo>/<project>/<artifact>:sha-<commit>",
    )


class ReleaseRule(_Config):
    branch: str | None = Field(None, description="Regex of branches that release")
    tag: bool | None = None
    manual: bool | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        given = [v for v in (self.branch, self.tag, self.manual) if v is not None]
        if len(given) != 1:
            raise ValueError("each release rule sets exactly one of branch, tag or manual")
        if self.branch is not None:
            try:
                re.compile(self.branch)
            except re.error as exc:
                raise ValueError(f"branch is not a valid regex: {exc}") from None
        return self


class ReleaseConfig(_Config):
    on: list[ReleaseRule] = Field(default_factory=list)


class DeployConfig(_Config):
    resources: list[dict[str, Any]] = Field(default_factory=list)


class ProjectConfig(_Config):
    """``<project>/.forge/project.yaml``: a directory holding it is a project."""

    name: Name
    depends_on: list[Name] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list, description="Extra globs (repo-relative) that affect it")
    phases: dict[Name, ProjectPhase] = Field(default_factory=dict)
    artifacts: dict[Name, ArtifactConfig] = Field(default_factory=dict)
    release: ReleaseConfig | None = None
    deploy: DeployConfig | None = None

"""The entities PostgreSQL keeps (DESIGN §4). Plain pydantic models, no persistence logic."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from forge.domain.discovery import DiscoveryResult
from forge.domain.messages import DEFAULT_POOL, PoolName
from forge.domain.status import ApprovalStatus, DeploymentStatus, Status

__all__ = [
    "AliasType",
    "Approval",
    "ArtifactType",
    "CommitSha",
    "Deployment",
    "PhaseExecution",
    "PipelineRun",
    "Release",
    "ReleaseAlias",
    "ReleaseArtifact",
    "RepoName",
    "Repository",
    "StepExecution",
    "TaskExecution",
    "Trigger",
]

REPO_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
RepoName = Annotated[str, StringConstraints(pattern=REPO_NAME_RE.pattern, max_length=200)]
CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Trigger(StrEnum):
    PUSH = "push"
    PULL_REQUEST = "pull_request"
    TAG = "tag"
    MANUAL = "manual"


class Repository(_Entity):
    id: UUID
    name: RepoName
    clone_url: str
    default_branch: str = "main"
    webhook_secret_ref: str | None = None
    enabled: bool = True
    secrets: tuple[str, ...] = Field(
        (), description="Names of the secrets an operator granted this repository's steps, sorted"
    )
    pool: PoolName = Field(
        DEFAULT_POOL, description="The worker pool (trust boundary) that runs its jobs; set by an operator"
    )
    created_at: datetime
    updated_at: datetime


class PipelineRun(_Entity):
    id: UUID
    repository: RepoName
    branch: str | None
    tag: str | None = Field(None, description="The pushed tag (trigger tag); a run has a branch or a tag or neither")
    release_projects: tuple[str, ...] = Field(
        (), description="Projects a manual release request asked to release (POST /v1/releases)"
    )
    commit_sha: CommitSha
    base_sha: CommitSha | None
    trigger: Trigger
    triggered_by: str
    status: Status
    discovery_status: Status = Field(description="Status of the discovery job of this run")
    discovery: DiscoveryResult | None = Field(None, description="Discovery result (DESIGN §3)")
    discovery_key: str | None = Field(None, description="Object key of the stored discovery result")
    error: str | None = None
    error_code: str | None = Field(None, description="Why the run failed, as a code (e.g. invalid_config)")
    github_context: dict[str, Any] | None = None
    workflow_name: str | None = None
    cancel_requested_at: datetime | None = Field(None, description="When a cancel was requested (DELETE)")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None


class PhaseExecution(_Entity):
    id: UUID
    run_id: UUID
    name: str
    group: int
    status: Status
    created_at: datetime
    updated_at: datetime


class TaskExecution(_Entity):
    id: UUID
    phase_id: UUID
    project: str
    project_path: str
    status: Status
    created_at: datetime
    updated_at: datetime


class StepExecution(_Entity):
    id: UUID
    task_id: UUID
    name: str
    action: str
    target: str
    status: Status
    exit_code: int | None = None
    attempts: int = 0
    logs_key: str | None = None
    created_at: datetime
    updated_at: datetime


class AliasType(StrEnum):
    NUMERIC = "numeric"
    TAG = "tag"
    BRANCH = "branch"
    CUSTOM = "custom"


class ReleaseAlias(_Entity):
    alias: str
    type: AliasType


class ArtifactType(StrEnum):
    CONTAINER = "container"
    BINARY = "binary"
    ARCHIVE = "archive"


class ReleaseArtifact(_Entity):
    id: UUID
    release_id: UUID
    name: str
    type: ArtifactType
    tracking_ref: str = Field(description="Tracking image <registry>/<owner>/<repo>/<project>/<artifact>:sha-<40hex>")
    tracking_digest: str
    published: tuple[dict[str, Any], ...] = Field((), description="Where publishers put it: publisher, ref, digest")
    created_at: datetime
    updated_at: datetime


class Release(_Entity):
    """Immutable once recorded (DESIGN §4); only ``tagged_at`` is filled in later, once the controller has
    pushed the number tag to the registry."""

    id: UUID
    repository: RepoName
    project: str
    commit_sha: CommitSha
    number: int = Field(ge=1, description="Per (repository, project), gap-free from 1")
    oci_ref: str
    oci_digest: str
    trigger: Trigger
    branch: str | None = Field(None, description="The branch released from (its alias is <branch>-<number>)")
    tag: str | None = Field(None, description="The git tag released (also an alias)")
    aliases: tuple[ReleaseAlias, ...] = ()
    artifacts: tuple[ReleaseArtifact, ...] = ()
    run_id: UUID | None = None
    created_by: str
    created_at: datetime
    updated_at: datetime
    tagged_at: datetime | None = Field(None, description="When the <number> tag was pushed to the registry")


class Deployment(_Entity):
    """One request to put a release in an environment (DESIGN §4): ``pending`` until the controller has
    committed its ReleasePointer to the GitOps repository, then ``active`` (the previous active one of the
    same (environment, repository, project) becomes ``superseded``) or ``failed`` with ``error``."""

    id: UUID
    release_id: UUID
    repository: RepoName
    project: str
    environment: str
    release_number: int = Field(ge=1)
    commit_sha: CommitSha
    oci_digest: str
    status: DeploymentStatus
    gitops_commit: str | None = Field(None, description="The GitOps commit that wrote the pointer (once it is pushed)")
    deployed_by: str = Field(description="Who asked: a token's subject, or the controller for auto-deploys")
    reason: str
    approval_id: UUID | None = Field(None, description="The approval the deployment was allowed by, if one was needed")
    error: str | None = Field(None, description="Why the deployment failed")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = Field(None, description="When it became active or failed")


class Approval(_Entity):
    """Permission to deploy one release to one environment until ``expires_at``. ``status`` is read as
    ``expired`` once ``expires_at`` has passed (an active approval is never stored as expired)."""

    id: UUID
    release_id: UUID
    repository: RepoName
    project: str
    release_number: int = Field(ge=1)
    environment: str
    approver: str
    justification: str
    expires_at: datetime
    status: ApprovalStatus
    revoked_by: str | None = None
    created_at: datetime
    updated_at: datetime

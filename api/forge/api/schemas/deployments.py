"""Request and response bodies of ``/v1/deployments`` and ``/v1/approvals`` (DESIGN §4, §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from forge.domain.entities import Approval, Deployment, RepoName
from forge.domain.status import ApprovalStatus, DeploymentStatus
from forge.ports.store import MAX_APPROVAL_SECONDS

__all__ = ["ApprovalOut", "CreateApproval", "CreateDeployment", "DeploymentOut"]

Project = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$", max_length=63)]
Environment = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$", max_length=63)]
Ref = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$"),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateDeployment(_In):
    """Deploy the release ``ref`` of ``repository``/``project`` to ``environment``."""

    repository: RepoName = Field(description="owner/repo")
    project: Project
    ref: Ref = Field(description="The release: number, tag, alias (main-4) or commit-sha prefix (7+ hex)")
    environment: Environment
    reason: str = Field("manual deployment", min_length=1, max_length=1000, description="Why: in the GitOps commit")


class CreateApproval(_In):
    """Allow the release ``ref`` of ``repository``/``project`` into ``environment`` for ``expires_in`` seconds."""

    repository: RepoName = Field(description="owner/repo")
    project: Project
    ref: Ref = Field(description="The release: number, tag, alias or commit-sha prefix")
    environment: Environment
    justification: str = Field(min_length=1, max_length=2000, description="Why this release may go there")
    expires_in: int = Field(
        86400, ge=60, le=MAX_APPROVAL_SECONDS, description="Seconds the approval lasts (1 minute to 30 days)"
    )


class DeploymentOut(BaseModel):
    id: UUID
    release_id: UUID
    repository: str
    project: str
    environment: str
    release_number: int
    commit_sha: str
    oci_digest: str = Field(description="The Release OCI manifest digest the pointer names")
    status: DeploymentStatus = Field(description="pending → active (pointer committed) or failed; later superseded")
    gitops_commit: str | None = Field(description="The GitOps commit that wrote the pointer")
    deployed_by: str
    reason: str
    approval_id: UUID | None
    error: str | None = Field(description="Why it failed")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentOut:
        return cls.model_validate(deployment.model_dump())


class ApprovalOut(BaseModel):
    id: UUID
    release_id: UUID
    repository: str
    project: str
    release_number: int
    environment: str
    approver: str
    justification: str
    expires_at: datetime
    status: ApprovalStatus = Field(description="active, expired (past expires_at) or revoked")
    revoked_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, approval: Approval) -> ApprovalOut:
        return cls.model_validate(approval.model_dump())

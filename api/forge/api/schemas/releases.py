"""Response bodies of ``/v1/releases``: a release with its aliases and artifacts (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from forge.domain.entities import AliasType, ArtifactType, CommitSha, Release, RepoName, Trigger

__all__ = ["CreateRelease", "ReleaseAliasOut", "ReleaseArtifactOut", "ReleaseOut"]


class CreateRelease(BaseModel):
    """A manual release request: release ``project`` of ``repository`` at ``commit_sha``."""

    model_config = ConfigDict(extra="forbid")

    repository: RepoName
    project: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$", max_length=63)]  # in the OpenAPI, too
    commit_sha: CommitSha
    branch: str | None = Field(None, min_length=1, max_length=255, description="Recorded as the release's branch")
    requested_by: str = Field("anonymous", min_length=1, max_length=255)


class ReleaseAliasOut(BaseModel):
    alias: str
    type: AliasType


class ReleaseArtifactOut(BaseModel):
    name: str
    type: ArtifactType
    tracking_ref: str = Field(description="The artifact's tracking image, <registry>/<owner>/<repo>/<project>/<name>")
    tracking_digest: str
    published: list[dict[str, Any]] = Field(description="Where each publisher put it (publisher, ref, digest, url)")


class ReleaseOut(BaseModel):
    id: UUID
    repository: str
    project: str
    number: int = Field(description="Per (repository, project), gap-free from 1")
    commit_sha: str
    oci_ref: str = Field(
        description="The Release OCI artifact by digest, <registry>/<owner>/<repo>/<project>@sha256:..."
    )
    oci_digest: str = Field(description="Digest of the Release OCI manifest")
    trigger: Trigger
    branch: str | None
    tag: str | None
    aliases: list[ReleaseAliasOut] = Field(description="The number, the tag, <branch>-<number>: any is a ref")
    artifacts: list[ReleaseArtifactOut] = Field(description="By name")
    run_id: UUID | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    tagged_at: datetime | None = Field(description="When the <number> tag reached the registry (null until then)")

    @classmethod
    def of(cls, release: Release) -> ReleaseOut:
        return cls.model_validate(release.model_dump())

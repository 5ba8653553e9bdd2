"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.entities import CommitSha, PipelineRun, RepoName, Repository, Trigger
from forge.domain.status import Status

__all__ = ["CreateRepository", "CreateRun", "PageOut", "RepositoryOut", "RunOut"]

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateRepository(_In):
    name: RepoName = Field(description="owner/repo")
    clone_url: str = Field(min_length=1, max_length=2000, description="URL or local path workers clone from")
    default_branch: str = Field("main", min_length=1, max_length=255)
    webhook_secret_ref: str | None = Field(None, max_length=255)


class CreateRun(_In):
    repository: RepoName
    commit_sha: CommitSha
    branch: str | None = Field(None, max_length=255)
    base_sha: CommitSha | None = None
    trigger: Trigger = Trigger.MANUAL
    triggered_by: str = Field("anonymous", min_length=1, max_length=255)


class RepositoryOut(BaseModel):
    id: UUID
    name: str
    clone_url: str
    default_branch: str
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, repo: Repository) -> RepositoryOut:
        return cls.model_validate(repo.model_dump(exclude={"webhook_secret_ref"}))


class RunOut(BaseModel):
    id: UUID
    repository: str
    branch: str | None
    commit_sha: str
    base_sha: str | None
    trigger: Trigger
    triggered_by: str
    status: Status
    discovery_status: Status
    discovery: dict[str, Any] | None
    discovery_key: str | None
    error: str | None
    workflow_name: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, run: PipelineRun) -> RunOut:
        return cls.model_validate(run.model_dump(exclude={"github_context"}))


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

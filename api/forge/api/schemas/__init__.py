"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from litestar.params import KwargDefinition
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import (
    CommitSha,
    PhaseExecution,
    PipelineRun,
    RepoName,
    Repository,
    StepExecution,
    TaskExecution,
    Trigger,
)
from forge.domain.messages import MAX_POOL_LENGTH, POOL_PATTERN, check_pool
from forge.domain.status import Status
from forge.ports.store import RunExecutions

__all__ = [
    "MAX_GRANTED_SECRETS",
    "MAX_OFFSET",
    "CreateRepository",
    "CreateRun",
    "ExecutionsOut",
    "LogOut",
    "PageOut",
    "PhaseNodeOut",
    "PhaseOut",
    "RepositoryOut",
    "RunOut",
    "StepNodeOut",
    "StepOut",
    "TaskNodeOut",
    "TaskOut",
    "UpdateRepository",
]

T = TypeVar("T")

MAX_OFFSET = 1_000_000
"""The largest ``?offset=`` of a paged list (400 beyond: never a database error)."""

MAX_GRANTED_SECRETS = 100
"""The most secret names one repository may be granted."""

SecretName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=255),
    # Litestar's OpenAPI drops a list item's pydantic pattern; its own KwargDefinition keeps it
    KwargDefinition(
        pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=255, description="A secret's name (an environment variable name)"
    ),
]


PoolIn = Annotated[
    str,
    AfterValidator(check_pool),  # the one rule (forge.domain.messages), with its reason in the 400
    KwargDefinition(
        pattern=POOL_PATTERN,
        min_length=1,
        max_length=MAX_POOL_LENGTH,
        description="A worker pool: lower-case letters, digits and inner hyphens, at most "
        f"{MAX_POOL_LENGTH} characters; `deploy` is reserved",
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateRepository(_In):
    name: RepoName = Field(description="owner/repo")
    clone_url: str = Field(
        min_length=1,
        max_length=2000,
        description="Where workers clone from: https://, http://, ssh://, git:// or user@host:path, without "
        "credentials (local absolute paths and private addresses only where the platform allows them)",
    )
    default_branch: str = Field("main", min_length=1, max_length=255)
    webhook_secret_ref: str | None = Field(None, max_length=255)
    secrets: list[SecretName] | None = Field(
        None,
        max_length=MAX_GRANTED_SECRETS,
        description="Names of the secrets this repository's steps may read (an operator's grant; omitted: "
        "none on a new repository, no change on a registered one)",
    )
    pool: PoolIn | None = Field(
        None,
        description="The worker pool (trust boundary) that runs its jobs: only workers started with "
        "FORGE_WORKER__POOL=<pool> take them (omitted: `default` on a new repository, no change on a registered "
        "one)",
    )


class UpdateRepository(_In):
    secrets: list[SecretName] | None = Field(
        None,
        max_length=MAX_GRANTED_SECRETS,
        description="The names of the secrets this repository's steps may read, replacing the current grant "
        "(omitted: unchanged)",
    )
    pool: PoolIn | None = Field(
        None,
        description="The worker pool that runs its jobs from now on (runs whose workflow is built later; "
        "omitted: unchanged)",
    )


class CreateRun(_In):
    repository: RepoName
    commit_sha: CommitSha
    branch: str | None = Field(None, max_length=255)
    tag: str | None = Field(None, min_length=1, max_length=255, description="The tag this run is for (not with branch)")
    base_sha: CommitSha | None = None
    trigger: Trigger = Trigger.MANUAL
    triggered_by: str = Field("anonymous", min_length=1, max_length=255)


class RepositoryOut(BaseModel):
    id: UUID
    name: str
    clone_url: str
    default_branch: str
    enabled: bool
    secrets: list[str] = Field(description="Names of the secrets granted to this repository's steps")
    pool: str = Field(description="The worker pool (trust boundary) that runs its jobs")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, repo: Repository) -> RepositoryOut:
        return cls.model_validate(repo.model_dump(exclude={"webhook_secret_ref"}))


class RunOut(BaseModel):
    id: UUID
    repository: str
    branch: str | None
    tag: str | None
    release_projects: list[str] = Field(description="Projects a manual release request asked to release")
    commit_sha: str
    base_sha: str | None
    trigger: Trigger
    triggered_by: str
    status: Status
    discovery_status: Status
    discovery: DiscoveryResult | None
    discovery_key: str | None
    error: str | None
    error_code: str | None = Field(
        description="Why the run failed, as a code: invalid_config, step_failed, workflow_failed, timeout, "
        "cancelled, internal, ..."
    )
    workflow_name: str | None
    cancel_requested_at: datetime | None
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


class StepOut(BaseModel):
    id: UUID
    task_id: UUID
    name: str
    action: str
    target: str
    status: Status
    exit_code: int | None
    attempts: int
    logs_key: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, step: StepExecution) -> StepOut:
        return cls.model_validate(step.model_dump())


class TaskOut(BaseModel):
    id: UUID
    phase_id: UUID
    project: str
    project_path: str
    status: Status
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: TaskExecution) -> TaskOut:
        return cls.model_validate(task.model_dump())


class PhaseOut(BaseModel):
    id: UUID
    run_id: UUID
    name: str
    group: int
    status: Status
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, phase: PhaseExecution) -> PhaseOut:
        return cls.model_validate(phase.model_dump())


class StepNodeOut(StepOut):
    started_at: datetime | None
    completed_at: datetime | None
    message: str | None


class TaskNodeOut(TaskOut):
    started_at: datetime | None
    completed_at: datetime | None
    steps: list[StepNodeOut]


class PhaseNodeOut(PhaseOut):
    started_at: datetime | None
    completed_at: datetime | None
    tasks: list[TaskNodeOut]


class ExecutionsOut(BaseModel):
    run_id: UUID
    phases: list[PhaseNodeOut] = Field(description="By group, then name; tasks by project; steps as declared")

    @classmethod
    def of(cls, ex: RunExecutions) -> ExecutionsOut:
        def times(execution_id: UUID) -> dict[str, Any]:
            detail = ex.detail(execution_id)
            return {"started_at": detail.started_at, "completed_at": detail.completed_at}

        return cls(
            run_id=ex.run_id,
            phases=[
                PhaseNodeOut(
                    **phase.model_dump(),
                    **times(phase.id),
                    tasks=[
                        TaskNodeOut(
                            **task.model_dump(),
                            **times(task.id),
                            steps=[
                                StepNodeOut(**step.model_dump(), **times(step.id), message=ex.detail(step.id).message)
                                for step in ex.steps_of(task.id)
                            ],
                        )
                        for task in ex.tasks_of(phase.id)
                    ],
                )
                for phase in ex.phases
            ],
        )


class LogOut(BaseModel):
    complete: bool = Field(description="The step finished writing its log")
    url: str | None = Field(None, description="Presigned GET URL of the whole log (when complete)")
    content: str | None = Field(None, description="The log so far (while the step runs)")

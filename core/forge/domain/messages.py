"""Versioned job and result envelopes carried over NATS JetStream (DESIGN §6).

A ``Job`` is published on the subject of its type and its worker pool; its ``key`` is the natural
idempotency key (``Nats-Msg-Id`` when published, and the subject suffix its ``Result`` is stored
under).

**Worker pools** (one per trust boundary, docs/security.md): every job subject is
``<type prefix>.<pool>.<key tokens after the first>``, e.g. ``pipeline.tasks.<pool>.<run>.<phase>…``
for every job type alike; a worker of pool ``p`` consumes ``<type prefix>.p.>`` only (one durable
consumer per type and pool), so a job of a pool nobody serves stays queued. The pool of a run's jobs
is its repository's (``Repository.pool``, ``default`` unless an operator sets another).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "CANCELS_STREAM",
    "CANCEL_SUBJECTS",
    "DEFAULT_POOL",
    "MAX_POOL_LENGTH",
    "POOL_PATTERN",
    "RESULT_INLINE_LIMIT",
    "SCHEMA_VERSION",
    "STREAMS",
    "ArtifactPayload",
    "CiPayload",
    "DeployPayload",
    "DiscoveryPayload",
    "Job",
    "JobError",
    "JobType",
    "PoolName",
    "ReleasePayload",
    "Result",
    "StreamSpec",
    "cancel_subject",
    "check_pool",
    "job_subject",
    "pool_filter",
    "result_subject",
]

SCHEMA_VERSION: Literal[1] = 1
RESULT_INLINE_LIMIT = 1024 * 1024  # results above this are stored in object storage (DESIGN §6)
#: ``pipeline.cancel.<run id>``: published into ``pipeline-cancels`` (so a worker that pulls a job of a
#: cancelled run later still sees it) and received live by workers over a core subscription.
CANCEL_SUBJECTS = "pipeline.cancel.>"
CANCELS_STREAM = "pipeline-cancels"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
JobKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", max_length=200)]

DEFAULT_POOL = "default"
MAX_POOL_LENGTH = 32
#: A pool is a NATS subject token, part of a durable consumer's name and of a Kubernetes object's name
#: (``forge-worker-<type>-<pool>``): lower-case letters, digits and inner hyphens, at most 32 characters.
POOL_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
_POOL = re.compile(POOL_PATTERN)
#: ``pipeline.releases.deploy.…`` holds deploy jobs: a release pool of that name would share their subjects.
_RESERVED_POOLS = frozenset({"deploy"})


def check_pool(pool: str) -> str:
    """``pool`` when it may name a worker pool; ``ValueError`` with the reason otherwise."""
    if not 1 <= len(pool) <= MAX_POOL_LENGTH or not _POOL.match(pool):
        raise ValueError(
            f"pool {pool[:60]!r} is not a pool name: 1 to {MAX_POOL_LENGTH} lower-case letters, digits and "
            "hyphens, starting and ending with a letter or digit"
        )
    if pool in _RESERVED_POOLS:
        raise ValueError(f"pool {pool!r} is reserved (deploy jobs travel on pipeline.releases.deploy.*)")
    return pool


PoolName = Annotated[str, AfterValidator(check_pool)]


class JobType(StrEnum):
    DISCOVERY = "discovery"
    CI = "ci"
    ARTIFACT = "artifact"
    RELEASE = "release"
    DEPLOY = "deploy"


class StreamSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    subjects: tuple[str, ...]
    work_queue: bool


# ci jobs travel on pipeline.tasks.*, release and deploy jobs share pipeline.releases.* (DESIGN §6).
_PREFIX: dict[JobType, str] = {
    JobType.DISCOVERY: "pipeline.discovery",
    JobType.CI: "pipeline.tasks",
    JobType.ARTIFACT: "pipeline.artifacts",
    JobType.RELEASE: "pipeline.releases",
    JobType.DEPLOY: "pipeline.releases.deploy",
}

STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(name="pipeline-discovery", subjects=("pipeline.discovery.>",), work_queue=True),
    StreamSpec(name="pipeline-tasks", subjects=("pipeline.tasks.>",), work_queue=True),
    StreamSpec(name="pipeline-artifacts", subjects=("pipeline.artifacts.>",), work_queue=True),
    StreamSpec(name="pipeline-releases", subjects=("pipeline.releases.>",), work_queue=True),
    StreamSpec(name="pipeline-results", subjects=("pipeline.results.>",), work_queue=False),
    StreamSpec(name="pipeline-dlq", subjects=("pipeline.dlq.>",), work_queue=False),
    # Step lifecycle events; one consumer (the controller) acks them once they are in PostgreSQL.
    StreamSpec(name="pipeline-events", subjects=("pipeline.events.>",), work_queue=True),
    StreamSpec(name=CANCELS_STREAM, subjects=(CANCEL_SUBJECTS,), work_queue=False),
)

STREAM_OF: dict[JobType, str] = {
    JobType.DISCOVERY: "pipeline-discovery",
    JobType.CI: "pipeline-tasks",
    JobType.ARTIFACT: "pipeline-artifacts",
    JobType.RELEASE: "pipeline-releases",
    JobType.DEPLOY: "pipeline-releases",
}


def job_subject(job_type: JobType, *tokens: str) -> str:
    """``pipeline.<prefix>.<token>...``; every token must be a plain subject token."""
    for token in tokens:
        if not _TOKEN.match(token):
            raise ValueError(f"invalid subject token {token!r}")
    return ".".join((_PREFIX[job_type], *tokens))


def pool_filter(job_type: JobType, pool: str) -> str:
    """``<prefix>.<pool>.>``: the jobs of one type and pool (a worker's consumer filter)."""
    return f"{job_subject(job_type, check_pool(pool))}.>"


def cancel_subject(run_id: UUID) -> str:
    return f"pipeline.cancel.{run_id}"


def result_subject(key: str) -> str:
    return f"pipeline.results.{key}"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscoveryPayload(_Payload):
    type: Literal["discovery"] = "discovery"
    clone_url: str
    branch: str | None = None
    tag: str | None = None
    base_sha: str | None = None
    release_projects: list[str] = Field(default_factory=list, description="Manual release requests of the run")


class CiPayload(_Payload):
    type: Literal["ci"] = "ci"
    clone_url: str
    phase: str
    project: str
    project_path: str
    step: str
    action: Literal["run", "earthly"]
    target: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    granted_secrets: list[str] = Field(
        default_factory=list,
        description="Which of `secrets` an operator granted the repository; a step naming any other never starts",
    )
    timeout_seconds: int
    retries: int = Field(0, description="Attempts after the first; Argo's retryStrategy limit")
    attempt: int = Field(0, ge=0, description="0 for the first attempt ({{retries}} in Argo)")
    step_execution_id: UUID | None = None


class ArtifactPayload(_Payload):
    """Build one artifact with its producer (a step in the project directory) and publish it.

    The artifact's configuration is read from the project's config blob at the commit, so the job
    carries what identifies it, not a copy of it."""

    type: Literal["artifact"] = "artifact"
    clone_url: str
    project: str
    project_path: str
    config_blob: str = Field(pattern=r"^[0-9a-f]{40}$", description="Git blob id of the project's .forge/project.yaml")
    artifact: str
    timeout_seconds: int
    attempt: int = Field(0, ge=0)
    step_execution_id: UUID | None = None
    granted_secrets: list[str] = Field(
        default_factory=list, description="Which of the producer's secrets an operator granted the repository"
    )


class ReleasePayload(_Payload):
    """Render, pack and push one project's Release OCI artifact from its artifacts' published fields."""

    type: Literal["release"] = "release"
    clone_url: str
    project: str
    project_path: str
    config_blob: str = Field(pattern=r"^[0-9a-f]{40}$", description="Git blob id of the project's .forge/project.yaml")
    trigger: Literal["push", "tag", "manual"]
    branch: str | None = None
    tag: str | None = None
    requested_by: str
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="Artifact name -> key of the artifact job whose result has its fields"
    )
    timeout_seconds: int
    attempt: int = Field(0, ge=0)
    step_execution_id: UUID | None = None


class DeployPayload(_Payload):
    type: Literal["deploy"] = "deploy"
    project: str
    release_id: UUID
    environment: str
    requested_by: str


Payload = Annotated[
    DiscoveryPayload | CiPayload | ArtifactPayload | ReleasePayload | DeployPayload,
    Field(discriminator="type"),
]


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    id: UUID = Field(default_factory=uuid4)
    key: JobKey = Field(description="Idempotency key: same key, same job")
    type: JobType
    run_id: UUID
    repository: str
    commit_sha: str
    payload: Payload
    attempt: int = Field(1, ge=1)
    deadline: datetime
    trace_id: str | None = None
    pool: PoolName = Field(DEFAULT_POOL, description="The worker pool that runs it: its repository's")

    @property
    def subject(self) -> str:
        """``<prefix>.<pool>.<key tokens after the first>`` (``pipeline.tasks.default.<run>.<phase>…``)."""
        return job_subject(self.type, self.pool, *self.key.split(".")[1:])


class JobError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    message: str
    permanent: bool = True
    details: dict[str, Any] = Field(default_factory=dict)


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    job_id: UUID
    key: str
    success: bool
    data: dict[str, Any] | None = None
    object_key: str | None = Field(None, description="Where the data is when it exceeds 1 MB")
    error: JobError | None = None

"""Database: PostgreSQL is the system of record (DESIGN §4). Every write is idempotent by a natural key.

One port per aggregate: repositories (written by the API), runs (created and cancelled through the
API, moved along by the controller), executions (phases, tasks and steps: written only by the
controller, from the step events workers publish) and releases (recorded only by the controller,
after the release worker pushed the Release OCI artifact). ``Database`` is what every process does
with the connection itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar
from uuid import UUID

from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import (
    AliasType,
    Approval,
    ArtifactType,
    Deployment,
    PhaseExecution,
    PipelineRun,
    Release,
    ReleaseAlias,
    Repository,
    StepExecution,
    TaskExecution,
    Trigger,
)
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = [
    "ALIAS_ORDER",
    "MAX_APPROVAL_SECONDS",
    "RUN_FILTERS",
    "ApprovalStore",
    "ChangeKind",
    "CommittedDeployment",
    "Database",
    "DeploymentStore",
    "ExecutionDetail",
    "ExecutionStore",
    "JsonDocument",
    "NewApproval",
    "NewDeployment",
    "NewRelease",
    "NewReleaseArtifact",
    "NewRepository",
    "NewRun",
    "Page",
    "ReleaseFilter",
    "ReleaseStore",
    "RepositoryStore",
    "RunChange",
    "RunExecutions",
    "RunFilter",
    "RunSnapshot",
    "RunStore",
    "alias_conflict",
    "ambiguous_ref",
    "check_claim",
    "check_page",
    "check_release_ref",
    "ensure_same_registration",
    "no_release",
    "secret_grant",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class NewRepository:
    """A repository to register; ``secrets`` are the names its steps may read and ``pool`` the worker pool
    that runs its jobs (``None``: not given; a new repository then has none and ``default``)."""

    name: str
    clone_url: str
    default_branch: str = "main"
    webhook_secret_ref: str | None = None
    secrets: tuple[str, ...] | None = None
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create; idempotent on (repository, commit_sha, :meth:`ref`)."""

    repository: str
    commit_sha: str
    branch: str | None = None
    tag: str | None = None
    base_sha: str | None = None
    trigger: Trigger = Trigger.MANUAL
    triggered_by: str = "anonymous"
    github_context: dict[str, Any] | None = None
    release_projects: tuple[str, ...] = ()

    def ref(self) -> str:
        """What a run is for besides its commit: ``refs/heads/<branch>``, ``refs/tags/<tag>`` or ``''``,
        plus ``#release=<projects>`` for a manual release request. A tag pushed on a commit that already
        ran for its branch is a new run (its tag-triggered releases need one); the same push delivered
        twice is not. One rule for every store adapter."""
        if self.branch is not None and self.tag is not None:
            raise InvalidInputError(
                f"a run has a branch or a tag, not both (branch {self.branch!r}, tag {self.tag!r})",
                details={"branch": self.branch, "tag": self.tag},
            )
        ref = f"refs/tags/{self.tag}" if self.tag is not None else f"refs/heads/{self.branch}" if self.branch else ""
        if self.release_projects:
            ref += "#release=" + ",".join(sorted(set(self.release_projects)))
        return ref


@dataclass(frozen=True, slots=True)
class RunFilter:
    repository: str | None = None
    branch: str | None = None
    status: Status | None = None
    commit_sha: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def conditions(self) -> dict[str, str]:
        """Filter name -> the text a listed run must have (``RUN_FILTERS``); ``InvalidInputError``
        for an unknown filter. One rule for every store adapter."""
        wanted: dict[str, Any] = {
            "repository": self.repository,
            "branch": self.branch,
            "status": self.status,
            "commit_sha": self.commit_sha,
            **self.extra,
        }
        unknown = sorted(set(wanted) - set(RUN_FILTERS))
        if unknown:
            raise InvalidInputError(
                f"unknown run filter(s) {', '.join(unknown)}; known: {', '.join(RUN_FILTERS)}",
                details={"filters": unknown},
            )
        return {key: str(value) for key, value in wanted.items() if value is not None}


#: The run filters every store understands, in the order they are listed to users.
RUN_FILTERS = ("repository", "branch", "status", "commit_sha", "trigger", "triggered_by", "discovery_status")


def secret_grant(names: Sequence[str]) -> tuple[str, ...]:
    """A repository's granted secret names as stored: sorted, each once. One rule for every adapter."""
    return tuple(sorted(set(names)))


def ensure_same_registration(existing: Repository, new: NewRepository) -> None:
    """``ConflictError`` naming the fields (never their values) where ``new`` differs from the registered
    repository: a registration never changes one. An absent ``webhook_secret_ref``, ``secrets`` or ``pool`` is
    no change (grants and pools change only through ``RepositoryStore.update_repository``)."""
    differ = [
        name
        for name, old, wanted in (
            ("clone_url", existing.clone_url, new.clone_url),
            ("default_branch", existing.default_branch, new.default_branch),
            ("webhook_secret_ref", existing.webhook_secret_ref, new.webhook_secret_ref),
            ("secrets", existing.secrets, None if new.secrets is None else secret_grant(new.secrets)),
            ("pool", existing.pool, new.pool),
        )
        if wanted is not None and wanted != old
    ]
    if differ:
        raise ConflictError(
            f"repository {new.name} is already registered with a different {', '.join(differ)}; "
            "a registration never changes an existing repository",
            details={"repository": new.name, "fields": differ},
        )


@dataclass(frozen=True, slots=True)
class ExecutionDetail:
    """When a phase, task or step started and finished, and a step's last message."""

    started_at: datetime | None = None
    completed_at: datetime | None = None
    message: str | None = None


_NO_DETAIL = ExecutionDetail()


@dataclass(frozen=True, slots=True)
class JsonDocument:
    """A read already encoded as the JSON the API sends (UTF-8), built from one consistent snapshot.

    The ``*_json`` reads of ``RunStore`` and ``ExecutionStore`` return these so that a hot read costs
    one round trip and no model is built per row: the database (or the memory store) writes the
    bytes. Each method documents its shape; the API's response models (``forge.api.schemas``) are
    the schema, and the compliance suite checks every adapter byte for byte against them.
    """

    body: bytes
    version: str
    """Opaque and cheap: different as soon as a write of the store changed any row the body was built
    from, equal while none of the rows it covers did (an adapter may cover more than the body shows,
    say every row of the run under one page of it; PostgreSQL versions executions by the run's newest
    change, so a row edited by hand outside the store is not seen). An ``ETag`` is made from it. Only
    comparable between reads of the same method with the same arguments on the same adapter."""
    total: int = 1
    """For a page: how many items there are in all (steps of the run, runs matching the filter)."""


@dataclass(frozen=True, slots=True)
class RunExecutions:
    """The execution tree of one run: phases (by group, then name), tasks (by project), steps (declared order)."""

    run_id: UUID
    phases: list[PhaseExecution]
    tasks: list[TaskExecution]
    steps: list[StepExecution]
    details: Mapping[UUID, ExecutionDetail] = field(default_factory=dict)

    def tasks_of(self, phase_id: UUID) -> list[TaskExecution]:
        return [t for t in self.tasks if t.phase_id == phase_id]

    def steps_of(self, task_id: UUID) -> list[StepExecution]:
        return [s for s in self.steps if s.task_id == task_id]

    def detail(self, execution_id: UUID) -> ExecutionDetail:
        return self.details.get(execution_id, _NO_DETAIL)

    def step(self, phase: str, project: str, step: str) -> StepExecution:
        """The step ``step`` of ``project`` in ``phase``; ``NotFoundError`` when the run has none."""
        phase_ids = {p.id for p in self.phases if p.name == phase}
        task_ids = {t.id for t in self.tasks if t.phase_id in phase_ids and t.project == project}
        for candidate in self.steps:
            if candidate.task_id in task_ids and candidate.name == step:
                return candidate
        raise NotFoundError(
            f"run {self.run_id} has no step {step!r} of project {project!r} in phase {phase!r}",
            details={"run_id": str(self.run_id), "phase": phase, "project": project, "step": step},
        )

    def step_id(self, phase: str, project: str, step: str) -> UUID:
        return self.step(phase, project, step).id

    def step_ids(self) -> dict[tuple[str, str, str], UUID]:
        """``(phase, project, step)`` -> step id, for every step of the run."""
        phases = {p.id: p.name for p in self.phases}
        tasks = {t.id: (phases[t.phase_id], t.project) for t in self.tasks}
        return {(*tasks[s.task_id], s.name): s.id for s in self.steps}

    def find_step(self, step_id: UUID) -> tuple[PhaseExecution, TaskExecution, StepExecution] | None:
        """The step with ``step_id`` and its task and phase, when it belongs to this run."""
        step = next((s for s in self.steps if s.id == step_id), None)
        if step is None:
            return None
        task = next(t for t in self.tasks if t.id == step.task_id)
        phase = next(p for p in self.phases if p.id == task.phase_id)
        return phase, task, step


ChangeKind = Literal["run", "phase", "task", "step"]


@dataclass(frozen=True, slots=True)
class RunChange:
    """One status change of a run or of one of its phases, tasks or steps (``GET /v1/runs/{id}/events``).

    Written by the store in the transaction that made the change; ``id`` grows with every change of
    the store and, within one run, in commit order. ``body`` is what a watcher needs to update its view
    (``forge.ports.changes``: the entity's status fields; the first change of a phase, task or step
    also names it and its parent).
    """

    id: int
    run_id: UUID
    kind: ChangeKind
    entity_id: UUID
    status: Status
    body: dict[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run and its executions as of ``last_change``, the newest change of the run they include."""

    run: PipelineRun
    executions: RunExecutions
    last_change: int


class Database(Protocol):
    async def migrate(self) -> list[str]:
        """Apply pending migrations in order (one at a time across processes); names applied."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class RepositoryStore(Protocol):
    async def register_repository(self, new: NewRepository) -> tuple[Repository, bool]:
        """Insert the repository (True), or return the registered one unchanged (False).

        Idempotent, never an update: a repository of that name with another ``clone_url``,
        ``default_branch`` or ``webhook_secret_ref`` (``None`` means "not given") is a
        ``ConflictError`` naming the repository and the fields (never their values); nothing is
        written.
        """

    async def get_repository(self, name: str) -> Repository:
        """``NotFoundError`` when unknown."""

    async def set_repository_secrets(self, name: str, secrets: Sequence[str]) -> Repository:
        """Replace the names of the secrets granted to the repository (an operator's explicit update;
        stored as ``secret_grant``): the repository as updated. ``NotFoundError`` when unknown,
        ``InvalidInputError`` naming the constraint for a name that is not ``[A-Z_][A-Z0-9_]*`` or
        more than 100 names."""

    async def update_repository(
        self, name: str, *, secrets: Sequence[str] | None = None, pool: str | None = None
    ) -> Repository:
        """An operator's update, in one write: replace the secret grant (as ``set_repository_secrets``) and/or
        move the repository to worker ``pool`` (runs whose jobs are built later use it); ``None`` keeps a
        field. ``NotFoundError`` when unknown, ``InvalidInputError`` naming the constraint for a bad grant or
        a pool that is not a pool name (``forge.domain.messages.check_pool``); nothing is written then."""

    async def list_repositories(self, *, limit: int, offset: int) -> Page[Repository]: ...

    async def pools(self) -> list[str]:
        """The distinct worker pools of the registered repositories (disabled ones too: their runs in
        flight still have jobs), sorted; what the controller ensures consumers for."""


class RunStore(Protocol):
    async def create_run(self, new: NewRun) -> tuple[PipelineRun, bool]:
        """Idempotent on (repository, commit_sha): returns the existing run and False on a repeat.

        ``NotFoundError`` when the repository is not registered, ``ConflictError`` when disabled.
        """

    async def get_run(self, run_id: UUID) -> PipelineRun: ...

    async def list_runs(self, flt: RunFilter, *, limit: int, offset: int) -> Page[PipelineRun]: ...

    async def run_json(self, run_id: UUID) -> JsonDocument:
        """``get_run`` as JSON: an object with the fields of ``PipelineRun`` in declaration order but
        ``github_context``; timestamps ISO 8601 in UTC with ``Z``, microseconds only when non-zero
        (pydantic's form). ``discovery`` is the stored JSON as is, in jsonb's text form (keys by
        length then bytes, ``", "`` and ``": "`` separators), never parsed. ``NotFoundError`` for no run.
        """

    async def runs_json(self, flt: RunFilter, *, limit: int, offset: int) -> JsonDocument:
        """``list_runs`` as ``{"items": [run_json objects], "total": n, "limit": limit, "offset": offset}``
        (no spaces); ``total`` also in ``JsonDocument.total``."""

    async def claim_discovery(self, *, limit: int) -> list[PipelineRun]:
        """Atomically move runs whose discovery is ``pending`` to ``running`` and return them.

        Concurrent controllers never claim the same run (``FOR UPDATE SKIP LOCKED``).
        """

    async def runs_discovering(self) -> list[PipelineRun]:
        """Runs whose discovery is ``running`` (to resume after a controller restart)."""

    async def record_discovery(self, run_id: UUID, discovery: DiscoveryResult, object_key: str) -> PipelineRun:
        """Store the discovery result; the discovery status becomes ``success``."""

    async def fail_discovery(self, run_id: UUID, error: str, *, code: str) -> PipelineRun:
        """The discovery status and the run become ``failed`` with ``error`` (``code`` says why)."""

    async def set_workflow(self, run_id: UUID, workflow_name: str, *, replaces: str | None = None) -> PipelineRun:
        """Record the run's workflow; a repeat is a no-op, another name is a ``ConflictError`` unless
        ``replaces`` names the current one (a workflow resubmitted after the engine lost it)."""

    async def claim_execution(
        self, *, limit: int, claimer: str, lease: float, per_repository: int = 0
    ) -> list[PipelineRun]:
        """Runs ready for a workflow, each handed to one caller (``FOR UPDATE SKIP LOCKED``) and claimed
        by ``claimer`` (``check_claim``: a name of the calling controller instance, unique to it).

        Ready: discovery ``success``, status ``running``, no workflow, no cancel requested, and not
        claimed — or claimed but not renewed (``renew_execution_claims``) for ``lease`` seconds of the
        store's clock without a workflow being recorded (the claimer died): such a claim is taken
        over (the taker's ``lease`` judges: every claimer passes the same one). Claiming stamps
        ``execution_claimed_at`` and the claimer. ``per_repository`` > 0 is a quota: a repository never
        has more runs executing (running with a workflow, or claimed and renewed within ``lease``) than
        that; its further ready runs wait, oldest first, for a free place.
        """

    async def renew_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        """Renew ``claimer``'s claims on ``run_ids`` (stamp their claim time again) and return the ids it
        still holds: the runs whose claim names ``claimer``, i.e. not taken over since (a claim past its
        lease that nobody took is still the claimer's). A run missing from the answer was claimed by
        another controller (or never by ``claimer``, or does not exist): its former holder must stop
        working on it and write nothing for it. A holder renews well within the lease (every third of
        it) while it works on a run, and once more just before each write.
        """

    async def release_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        """Hand back ``claimer``'s claims on ``run_ids`` (a controller stopping, or leaving a run for later)
        and return the ids released: a released run is ready to be claimed again at once, by any claimer,
        without waiting for the lease (and no longer takes a place of the quota). A claim that names
        another claimer (taken over since) is left as it is and not in the answer; so is a run never
        claimed by ``claimer`` or one that does not exist. A repeat releases nothing.
        """

    async def runs_executing(self) -> list[PipelineRun]:
        """Runs with a workflow whose status is ``running`` (to watch, also after a restart)."""

    async def finish_run(
        self, run_id: UUID, status: Status, *, error: str | None = None, code: str | None = None
    ) -> PipelineRun:
        """End the run with ``status`` (success, failed or cancelled) in one transaction.

        Every step still ``pending`` becomes ``skipped`` and every step still ``running`` becomes
        ``cancelled``; tasks and phases roll up. ``error``/``code`` say why a run failed. A repeat is
        a no-op; another final status is a ``ConflictError``.
        """

    async def request_cancel(self, run_id: UUID) -> PipelineRun:
        """Ask the controller to cancel the run (idempotent); ``ConflictError`` when it has finished."""

    async def runs_cancel_requested(self) -> list[PipelineRun]:
        """Unfinished runs whose cancel was requested, oldest request first."""

    async def changes_since(self, run_id: UUID, after: int, *, limit: int) -> list[RunChange]:
        """The run's changes with an id above ``after``, oldest first, at most ``limit`` (1..1000).

        An unknown run has none. Changes of runs finished more than 24 h ago are pruned.
        """

    async def run_snapshot(self, run_id: UUID) -> RunSnapshot:
        """The run, its executions and its newest change id, read at one moment (one snapshot), so the
        changes after ``last_change`` are exactly what happened since; ``NotFoundError`` for no run."""


class ExecutionStore(Protocol):
    async def create_executions(self, run_id: UUID, discovery: DiscoveryResult) -> RunExecutions:
        """One phase per used phase, one task per (phase, affected project), one step per step.

        Idempotent: when the run already has executions they are returned unchanged.
        ``InvalidInputError`` when a phase is missing from ``discovery.phase_groups``.
        """

    async def get_executions(self, run_id: UUID) -> RunExecutions:
        """The run's executions (empty before ``create_executions``); ``NotFoundError`` for no run."""

    async def executions_json(self, run_id: UUID, *, limit: int, offset: int) -> JsonDocument:
        """``get_executions`` as the tree ``{"run_id", "phases": [phase + started_at, completed_at,
        "tasks": [task + started_at, completed_at, "steps": [step + started_at, completed_at,
        message]]]}`` (the fields of the entities in declaration order, encoded as ``run_json`` does).

        Paged over steps in tree order (phase group and name, task project, step position and name):
        the steps ``offset`` to ``offset + limit``, under the phases and tasks they belong to. Tasks
        and phases without steps appear on the page at offset 0 only, so one page holding every step
        is the whole tree. ``JsonDocument.total`` is the number of steps of the run. ``NotFoundError``
        for no run.
        """

    async def get_step(self, step_id: UUID) -> StepExecution: ...

    async def apply_step_events(self, events: Sequence[StepEvent]) -> int:
        """Apply ``events`` in order (``forge.domain.events.advance``) in one transaction and roll the
        changed steps' tasks and phases up; the number of steps that changed.

        Events of unknown steps and events that change nothing are skipped, so a batch never fails
        because of one event and the same batch applied twice changes nothing the second time.
        """

    async def fail_step(self, step_id: UUID, message: str | None) -> StepExecution:
        """Fail a step that no worker could report on (say, its dispatcher timed out) and roll it up;
        a step already final is returned unchanged."""


# -- releases ---------------------------------------------------------------------------------------

#: What an alias, and so a ``ref`` of ``get_release``, may be: the characters of git tags and branches
#: people use (``v1.2.3+build``, ``feature/x-4``), never a space, ``..`` or URL syntax. Tags and
#: branches outside it are refused when a release is recorded, so every alias can be asked for.
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+/-]*")
_MAX_REF = 255
_SHA_PREFIX = re.compile(r"[0-9a-fA-F]{7,40}")
_SHA = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"[a-z0-9]+:[a-f0-9]{32,}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]*")
_DIGITS = re.compile(r"[0-9]+")


def _alias_text(text: str, longest: int) -> bool:
    return len(text) <= longest and _REF.fullmatch(text) is not None and ".." not in text


def check_page(limit: int, offset: int, *, maximum: int = 1000) -> None:
    """``InvalidInputError`` naming ``limit`` or ``offset`` when a page request is out of range."""
    if not 1 <= limit <= maximum:
        raise InvalidInputError(f"limit must be between 1 and {maximum}, got {limit}", details={"limit": limit})
    if offset < 0:
        raise InvalidInputError(f"offset must not be negative, got {offset}", details={"offset": offset})


def check_claim(what: str, claimer: str, lease: float | None = None) -> None:
    """``InvalidInputError`` for a claimer that is not 1-256 characters (no NUL) or a lease that is not
    positive (``claim_execution``, ``claim_deployments``, their renewals and releases)."""
    if not 1 <= len(claimer) <= 256 or "\x00" in claimer:
        raise InvalidInputError(f"{what}: claimer must be 1-256 characters", details={"field": "claimer"})
    if lease is not None and not lease > 0:
        raise InvalidInputError(f"{what}: lease must be positive, got {lease}", details={"field": "lease"})


def check_release_ref(ref: str) -> str | None:
    """The commit-sha prefix ``ref`` may also be (lower case, 7 to 40 hex digits), else None.

    ``InvalidInputError`` when ``ref`` can be neither an alias nor a sha prefix: empty, longer than 255
    characters, or with a character no alias holds."""
    if not _alias_text(ref, _MAX_REF):
        shown = ref if len(ref) <= 80 else f"{ref[:80]}..."
        raise InvalidInputError(
            f"release ref {shown!r} is neither a release number, alias nor commit prefix: a ref is 1-{_MAX_REF} "
            "letters, digits, '.', '_', '+', '-' or '/', starting with a letter or digit",
            details={"field": "ref"},
        )
    return ref.lower() if _SHA_PREFIX.fullmatch(ref) else None


@dataclass(frozen=True, slots=True)
class NewReleaseArtifact:
    name: str
    type: ArtifactType
    tracking_ref: str
    tracking_digest: str
    published: tuple[Mapping[str, Any], ...] = ()
    """Where each publisher put it, e.g. ``{"publisher": "oci", "ref": ..., "digest": ...}``."""


@dataclass(frozen=True, slots=True)
class NewRelease:
    """A release the controller records once the release worker pushed its Release OCI artifact."""

    repository: str
    project: str
    commit_sha: str
    oci_ref: str
    oci_digest: str
    trigger: Trigger
    created_by: str
    run_id: UUID | None = None
    branch: str | None = None
    tag: str | None = None
    artifacts: tuple[NewReleaseArtifact, ...] = ()

    @property
    def what(self) -> str:
        """How errors name this release."""
        return f"recording the release of {self.repository}/{self.project}@{self.commit_sha}"

    def check(self) -> None:
        """``InvalidInputError`` (field named in ``details``) for a release no store may record; every
        adapter calls it before touching its data, so the rules live here once."""

        def refuse(field_: str, reason: str) -> InvalidInputError:
            return InvalidInputError(f"{self.what}: {field_} {reason}", details={"field": field_})

        if not _PROJECT.fullmatch(self.project):
            raise refuse("project", "must match ^[a-z][a-z0-9-]*$")
        if not _SHA.fullmatch(self.commit_sha):
            raise refuse("commit_sha", "must be 40 lower-case hex digits")
        if not _DIGEST.fullmatch(self.oci_digest):
            raise refuse("oci_digest", "must be a digest such as sha256:<64 hex>")
        if not self.oci_ref or not self.created_by:
            raise refuse("oci_ref" if not self.oci_ref else "created_by", "must not be empty")
        if self.tag is not None:
            if not _alias_text(self.tag, _MAX_REF):
                raise refuse("tag", f"{self.tag[:80]!r} cannot be an alias (1-{_MAX_REF} of [A-Za-z0-9._+/-])")
            if _DIGITS.fullmatch(self.tag):
                raise refuse("tag", f"{self.tag!r} is all digits and would shadow release {self.tag}")
        longest = _MAX_REF - 11  # room for "-<number>"
        if self.branch is not None and not _alias_text(self.branch, longest):
            raise refuse("branch", f"{self.branch[:80]!r} cannot start an alias (1-{longest} of [A-Za-z0-9._+/-])")
        if str(self.trigger) not in set(Trigger):
            raise refuse("trigger", f"must be one of {', '.join(Trigger)}")
        names = [a.name for a in self.artifacts]
        if any(not name for name in names) or len(set(names)) != len(names):
            raise refuse("artifacts", "must have distinct, non-empty names")
        if any(str(a.type) not in set(ArtifactType) for a in self.artifacts):
            raise refuse("artifacts", f"type must be one of {', '.join(ArtifactType)}")

    def aliases(self, number: int) -> tuple[ReleaseAlias, ...]:
        """The aliases of this release once it has ``number``: the number, the tag, ``<branch>-<number>``."""
        found = [ReleaseAlias(alias=str(number), type=AliasType.NUMERIC)]
        if self.tag is not None:
            found.append(ReleaseAlias(alias=self.tag, type=AliasType.TAG))
        if self.branch is not None:
            found.append(ReleaseAlias(alias=f"{self.branch}-{number}", type=AliasType.BRANCH))
        unique = {a.alias: a for a in reversed(found)}  # a tag equal to the branch alias is one alias: the tag
        return tuple(a for a in found if unique[a.alias] is a)


#: The order aliases are listed in, within one release (then by text).
ALIAS_ORDER = (AliasType.NUMERIC, AliasType.TAG, AliasType.BRANCH, AliasType.CUSTOM)


@dataclass(frozen=True, slots=True)
class ReleaseFilter:
    repository: str | None = None
    project: str | None = None
    run_id: UUID | None = None
    commit_sha: str | None = None
    trigger: Trigger | None = None

    def conditions(self) -> dict[str, str]:
        """Filter name -> the text a listed release must have; the ones set only."""
        wanted = {
            "repository": self.repository,
            "project": self.project,
            "run_id": self.run_id,
            "commit_sha": self.commit_sha,
            "trigger": self.trigger,
        }
        return {key: str(value) for key, value in wanted.items() if value is not None}


def alias_conflict(new: NewRelease, alias: ReleaseAlias, holder: int) -> ConflictError:
    """What recording ``new`` is when ``alias`` already names release ``holder`` of the project."""
    return ConflictError(
        f"{new.what}: the {alias.type} alias {alias.alias!r} already names release {holder} of "
        f"{new.repository}/{new.project}; aliases are unique within a project",
        details={"alias": alias.alias, "alias_type": str(alias.type), "release": holder},
    )


def ambiguous_ref(repository: str, project: str, ref: str, numbers: Sequence[int]) -> ConflictError:
    shown = ", ".join(str(n) for n in numbers)
    return ConflictError(
        f"release ref {ref!r} of {repository}/{project} is an ambiguous commit prefix: it matches releases "
        f"{shown}; give more of the sha",
        details={"ref": ref, "releases": list(numbers)},
    )


def no_release(repository: str, project: str, ref: str) -> NotFoundError:
    return NotFoundError(
        f"{repository}/{project} has no release {ref!r} (neither an alias nor a commit prefix of one)",
        details={"repository": repository, "project": project, "ref": ref},
    )


class ReleaseStore(Protocol):
    """Releases and their aliases and artifacts. The controller is the only writer."""

    async def record_release(self, new: NewRelease) -> tuple[Release, bool]:
        """Idempotent on (repository, project, commit_sha): an existing release is returned unchanged
        with False (releases are immutable). Otherwise number = previous highest + 1 for (repository,
        project), gap-free and unique under concurrency; aliases numeric ``str(number)``, the tag when
        given (type tag) and ``<branch>-<number>`` when a branch is given (type branch); artifacts
        stored with it; all in one transaction (True).

        ``NotFoundError`` for an unknown repository, ``InvalidInputError`` for what
        ``NewRelease.check`` refuses, ``ConflictError`` when an alias already names another release
        of the project (nothing is written)."""

    async def get_release(self, repository: str, project: str, ref: str) -> Release:
        """``ref`` resolved in this order: an exact alias (numbers included), then a commit-sha prefix
        of at least 7 hex digits (``ConflictError`` naming the candidates' numbers when several
        releases match), else ``NotFoundError``. A ref that can be neither (``check_release_ref``)
        is an ``InvalidInputError``."""

    async def list_releases(self, flt: ReleaseFilter, *, limit: int, offset: int) -> Page[Release]:
        """Newest first: ``created_at`` descending (so number descending within a project), then id."""

    async def releases_to_tag(self, *, limit: int) -> list[Release]:
        """Recorded releases whose number tag is not yet pushed to the registry, oldest first."""

    async def mark_tagged(self, release_id: UUID) -> None:
        """The number tag of the release is in the registry (a repeat keeps the first time);
        ``NotFoundError`` for no release."""


# -- deployments and approvals ----------------------------------------------------------------------

_ENVIRONMENT = re.compile(r"[a-z][a-z0-9-]{0,62}")
#: The longest an approval may last (30 days).
MAX_APPROVAL_SECONDS = 30 * 86400


def _refuse(what: str, field_: str, reason: str) -> InvalidInputError:
    return InvalidInputError(f"{what}: {field_} {reason}", details={"field": field_})


@dataclass(frozen=True, slots=True)
class CommittedDeployment:
    """A pending deployment whose pointer is committed (``gitops_commit`` set), and the seconds since, by the
    store's clock."""

    deployment: Deployment
    waited: float


@dataclass(frozen=True, slots=True)
class NewDeployment:
    """A request to deploy a release to an environment (the policy is the caller's to check first)."""

    release_id: UUID
    environment: str
    requested_by: str
    reason: str
    approval_id: UUID | None = None

    @property
    def what(self) -> str:
        return f"deploying release {self.release_id} to {self.environment!r}"

    def check(self) -> None:
        """``InvalidInputError`` naming the field; every adapter calls it first."""
        if not _ENVIRONMENT.fullmatch(self.environment):
            raise _refuse(self.what, "environment", "must match ^[a-z][a-z0-9-]*$ (at most 63 characters)")
        for name, value, longest in (("requested_by", self.requested_by, 256), ("reason", self.reason, 1000)):
            if not value.strip() or len(value) > longest or "\x00" in value:
                raise _refuse(self.what, name, f"must be 1-{longest} characters")


@dataclass(frozen=True, slots=True)
class NewApproval:
    """An approver's permission to deploy a release to an environment until ``expires_at``."""

    release_id: UUID
    environment: str
    approver: str
    justification: str
    expires_at: datetime

    @property
    def what(self) -> str:
        return f"approving release {self.release_id} for {self.environment!r}"

    def check(self) -> None:
        """``InvalidInputError`` naming the field; every adapter calls it first."""
        if not _ENVIRONMENT.fullmatch(self.environment):
            raise _refuse(self.what, "environment", "must match ^[a-z][a-z0-9-]*$ (at most 63 characters)")
        for name, value, longest in (("approver", self.approver, 256), ("justification", self.justification, 2000)):
            if not value.strip() or len(value) > longest or "\x00" in value:
                raise _refuse(self.what, name, f"must be 1-{longest} characters")
        if self.expires_at.tzinfo is None:
            raise _refuse(self.what, "expires_at", "must be a timezone-aware time")


class DeploymentStore(Protocol):
    """Deployments (DESIGN §4). The API asks for them; the controller is the one writer of their status."""

    async def request_deployment(self, new: NewDeployment) -> tuple[Deployment, bool]:
        """A pending deployment (True); or, when the release is already pending or active in the
        environment, that deployment unchanged (False). ``NotFoundError`` for no release,
        ``InvalidInputError`` for what ``NewDeployment.check`` refuses."""

    async def get_deployment(self, deployment_id: UUID) -> Deployment:
        """``NotFoundError`` for no deployment."""

    async def claim_deployments(self, *, limit: int, claimer: str, lease: float) -> list[Deployment]:
        """Pending deployments whose pointer is not recorded yet (``record_pointer``), oldest first, each
        handed to one caller and claimed by ``claimer`` (``check_claim``: a name of the calling controller
        instance, unique to it): never claimed, or claimed but not renewed (``renew_deployment_claims``)
        for ``lease`` seconds of the store's clock (the claimer died): such a claim is taken over (the
        taker's ``lease`` judges: every claimer passes the same one). Claiming stamps the claim time and
        the claimer."""

    async def renew_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        """Renew ``claimer``'s claims on ``deployment_ids`` (stamp their claim time again) and return the
        ids it still holds: the deployments whose claim names ``claimer``, i.e. not taken over since (a
        claim past its lease that nobody took is still the claimer's). A deployment missing from the
        answer was claimed by another controller (or never by ``claimer``, or does not exist): its former
        holder must stop working on it and write nothing for it, neither the pointer nor a status. A
        holder renews well within the lease (every third of it) while it works on a deployment, and once
        more just before each write."""

    async def release_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        """Hand back ``claimer``'s claims on ``deployment_ids`` (a controller stopping, or leaving a
        deployment for later) and return the ids released: a released pending deployment is ready to be
        claimed again at once, by any claimer, without waiting for the lease. A claim that names another
        claimer (taken over since) is left as it is and not in the answer; so is a deployment never claimed
        by ``claimer`` or one that does not exist. A repeat releases nothing."""

    async def record_pointer(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        """A pending deployment's pointer is committed in ``gitops_commit`` and Argo CD's health decides the
        rest: it stays pending with ``gitops_commit`` set and the commit time stamped, is claimed no more
        and is listed by ``committed_deployments``. A repeat keeps the first time (a new commit restamps
        it); ``ConflictError`` for a deployment that ended."""

    async def committed_deployments(self, *, limit: int) -> list[CommittedDeployment]:
        """Pending deployments whose pointer is recorded, longest-waiting first: what Argo CD health follows
        (any controller, at once after a restart)."""

    def deployment_lock(self, environment: str, repository: str, project: str) -> AbstractAsyncContextManager[None]:
        """Held by one caller at a time across processes (a PostgreSQL session advisory lock): the one
        writer of the (environment, repository, project) pointer and its deployments."""

    async def complete_deployment(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        """pending → active with its GitOps commit, and the previous active deployment of its
        (environment, repository, project) → superseded, in one transaction. A repeat is a no-op;
        ``ConflictError`` for a deployment that failed or was superseded."""

    async def fail_deployment(self, deployment_id: UUID, error: str) -> Deployment:
        """pending → failed with ``error``; the active deployment stays active. A repeat is a no-op;
        ``ConflictError`` for one that is active or superseded."""

    async def active_deployment(self, environment: str, repository: str, project: str) -> Deployment:
        """The active deployment; ``NotFoundError`` when there is none."""

    async def deployment_history(
        self, environment: str, repository: str, project: str, *, limit: int, offset: int
    ) -> Page[Deployment]:
        """Every deployment of the (environment, repository, project), newest first (then by id)."""

    async def releases_to_deploy(self, *, limit: int) -> list[Release]:
        """Releases whose automatic deployments are not planned yet, oldest first."""

    async def mark_deploys_planned(self, release_id: UUID) -> None:
        """The release's automatic deployments are requested (a repeat keeps the first time);
        ``NotFoundError`` for no release."""


class ApprovalStore(Protocol):
    """Approvals (DESIGN §4), written through the API by approvers."""

    async def create_approval(self, new: NewApproval) -> Approval:
        """A new active approval. ``NotFoundError`` for no release, ``InvalidInputError`` for what
        ``NewApproval.check`` refuses or an ``expires_at`` not in the future."""

    async def get_approval(self, approval_id: UUID) -> Approval:
        """``NotFoundError`` for no approval; its ``status`` reads ``expired`` past ``expires_at``."""

    async def revoke_approval(self, approval_id: UUID, revoked_by: str) -> Approval:
        """active → revoked (a repeat returns it unchanged); ``ConflictError`` for an expired one."""

    async def active_approval(self, release_id: UUID, environment: str) -> Approval | None:
        """The active approval of the release for the environment that expires last, ``None`` when
        every one expired or was revoked."""

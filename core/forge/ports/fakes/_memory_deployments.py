"""``DeploymentStore`` and ``ApprovalStore`` in memory, mixed into ``MemoryStore``: the rules of
``forge.adapters._postgres_deployments`` one for one (idempotent requests, one active per app, claims,
superseding, approvals read as expired past ``expires_at``, the messages).

Each method checks its input, passes one checkpoint (``_enter``) and runs to its end without awaiting
again, so it is one transaction. ``deployment_lock`` is an ``asyncio.Lock`` per app, shared by every
connection to the database (PostgreSQL's session advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from forge.domain.entities import Approval, Deployment, Release
from forge.domain.status import ApprovalStatus, DeploymentStatus
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.fakes._memory_releases import MemoryReleases, ReleaseTables
from forge.ports.fakes._memory_rows import Tables, check_text
from forge.ports.store import CommittedDeployment, NewApproval, NewDeployment, Page, check_claim, check_page

__all__ = ["DeploymentTables", "MemoryDeployments"]


@dataclass(slots=True)
class _DeploymentRow:
    id: UUID
    release_id: UUID
    environment: str
    status: DeploymentStatus
    deployed_by: str
    reason: str
    approval_id: UUID | None
    created_at: datetime
    updated_at: datetime
    gitops_commit: str | None = None
    error: str | None = None
    claimed_at: datetime | None = None
    claimed_by: str | None = None
    committed_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class _ApprovalRow:
    id: UUID
    release_id: UUID
    environment: str
    approver: str
    justification: str
    expires_at: datetime
    status: ApprovalStatus
    created_at: datetime
    updated_at: datetime
    revoked_by: str | None = None


class DeploymentTables:
    """The rows of ``deployments`` and ``approvals``, ``releases.deploys_planned_at`` and the app locks."""

    def __init__(self) -> None:
        self.deployments: dict[UUID, _DeploymentRow] = {}
        self.approvals: dict[UUID, _ApprovalRow] = {}
        self.planned: dict[UUID, datetime] = {}
        self.locks: dict[str, asyncio.Lock] = {}


class MemoryDeployments(MemoryReleases):
    """The deployment and approval methods of ``MemoryStore`` (which provides the tables and the checkpoint),
    on top of its release methods (deployments read their release's rows)."""

    _t: Tables
    _rt: ReleaseTables
    _dt: DeploymentTables

    # -- deployments ----------------------------------------------------------------------------------

    async def request_deployment(self, new: NewDeployment) -> tuple[Deployment, bool]:
        new.check()
        now = await self._enter(new.what)
        if new.release_id not in self._rt.rows:
            raise _no_release(new.release_id)
        same = [
            d
            for d in self._dt.deployments.values()
            if d.release_id == new.release_id
            and d.environment == new.environment
            and d.status in (DeploymentStatus.PENDING, DeploymentStatus.ACTIVE)
        ]
        if same:
            return self._deployment(max(same, key=lambda d: (d.created_at, d.id))), False
        if new.approval_id is not None and new.approval_id not in self._dt.approvals:
            raise NotFoundError(
                f'{new.what}: Key (approval_id)=({new.approval_id}) is not present in table "approvals".',
                details={"constraint": "deployments_approval_id_fkey", "table": "deployments"},
            )
        row = _DeploymentRow(
            id=uuid4(),
            release_id=new.release_id,
            environment=new.environment,
            status=DeploymentStatus.PENDING,
            deployed_by=new.requested_by,
            reason=new.reason,
            approval_id=new.approval_id,
            created_at=now,
            updated_at=now,
        )
        self._dt.deployments[row.id] = row
        return self._deployment(row), True

    async def get_deployment(self, deployment_id: UUID) -> Deployment:
        await self._enter(f"reading deployment {deployment_id}")
        return self._deployment(self._deployment_row(deployment_id))

    async def claim_deployments(self, *, limit: int, claimer: str, lease: float) -> list[Deployment]:
        check_page(limit, 0)
        check_claim("claim_deployments", claimer, lease)
        now = await self._enter("claiming pending deployments")
        stale = now - timedelta(seconds=lease)
        ready = [
            d
            for d in self._dt.deployments.values()
            if d.status is DeploymentStatus.PENDING
            and d.gitops_commit is None
            and (d.claimed_at is None or d.claimed_at < stale)
        ]
        ready.sort(key=lambda d: (d.created_at, d.id))
        for row in ready[:limit]:
            row.claimed_at = row.updated_at = now
            row.claimed_by = claimer
        return [self._deployment(row) for row in ready[:limit]]

    async def renew_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("renew_deployment_claims", claimer)
        if not deployment_ids:
            return set()
        now = await self._enter("renewing claims on pending deployments")
        held = {i for i in deployment_ids if (row := self._dt.deployments.get(i)) and row.claimed_by == claimer}
        for deployment_id in held:
            row = self._dt.deployments[deployment_id]
            row.claimed_at = row.updated_at = now
        return held

    async def release_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("release_deployment_claims", claimer)
        if not deployment_ids:
            return set()
        now = await self._enter("releasing claims on pending deployments")
        held = {i for i in deployment_ids if (row := self._dt.deployments.get(i)) and row.claimed_by == claimer}
        for deployment_id in held:
            row = self._dt.deployments[deployment_id]
            row.claimed_at, row.claimed_by, row.updated_at = None, None, now
        return held

    async def record_pointer(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        what = f"recording the pointer of deployment {deployment_id}"
        now = await self._enter(what)
        check_text(what, gitops_commit)
        row = self._deployment_row(deployment_id)
        if row.status is not DeploymentStatus.PENDING:
            raise _ended(what, row.status)
        if not _is_sha(gitops_commit):
            raise InvalidInputError(
                f"{what}: the value violates deployments_gitops_commit_format of deployments",
                details={"constraint": "deployments_gitops_commit_format", "table": "deployments", "column": None},
            )
        if row.gitops_commit != gitops_commit or row.committed_at is None:
            row.gitops_commit, row.committed_at, row.updated_at = gitops_commit, now, now
        return self._deployment(row)

    async def committed_deployments(self, *, limit: int) -> list[CommittedDeployment]:
        check_page(limit, 0)
        now = await self._enter("listing committed deployments")
        rows = [
            d
            for d in self._dt.deployments.values()
            if d.status is DeploymentStatus.PENDING and d.committed_at is not None
        ]
        rows.sort(key=lambda d: (d.committed_at or now, d.id))
        return [
            CommittedDeployment(self._deployment(r), max(0.0, (now - (r.committed_at or now)).total_seconds()))
            for r in rows[:limit]
        ]

    @contextlib.asynccontextmanager
    async def deployment_lock(self, environment: str, repository: str, project: str) -> AsyncIterator[None]:
        key = f"{environment}/{repository}/{project}"
        await self._enter(f"locking the deployments of {key}")
        lock = self._dt.locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield

    async def complete_deployment(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        what = f"activating deployment {deployment_id}"
        now = await self._enter(what)
        check_text(what, gitops_commit)
        row = self._deployment_row(deployment_id)
        if row.status is DeploymentStatus.PENDING:
            if not _is_sha(gitops_commit):
                raise InvalidInputError(
                    f"{what}: the value violates deployments_gitops_commit_format of deployments",
                    details={"constraint": "deployments_gitops_commit_format", "table": "deployments", "column": None},
                )
            release = self._rt.rows[row.release_id]
            for other in self._dt.deployments.values():
                if other.status is DeploymentStatus.ACTIVE and self._same_app(other, row, release.repository_id):
                    other.status, other.updated_at = DeploymentStatus.SUPERSEDED, now
            row.status, row.gitops_commit, row.error = DeploymentStatus.ACTIVE, gitops_commit, None
            row.completed_at = row.updated_at = now
        elif row.status is not DeploymentStatus.ACTIVE:
            raise _ended(what, row.status)
        return self._deployment(row)

    async def fail_deployment(self, deployment_id: UUID, error: str) -> Deployment:
        what = f"failing deployment {deployment_id}"
        now = await self._enter(what)
        check_text(what, error)
        row = self._deployment_row(deployment_id)
        if row.status is DeploymentStatus.PENDING:
            row.status, row.error = DeploymentStatus.FAILED, error[:4000] or "failed"
            row.completed_at = row.updated_at = now
        elif row.status is not DeploymentStatus.FAILED:
            raise _ended(what, row.status)
        return self._deployment(row)

    async def active_deployment(self, environment: str, repository: str, project: str) -> Deployment:
        what = f"reading the active deployment of {repository}/{project} in {environment}"
        await self._enter(what)
        check_text(what, environment, repository, project)
        for row in self._of_app(environment, repository, project):
            if row.status is DeploymentStatus.ACTIVE:
                return self._deployment(row)
        raise NotFoundError(
            f"{repository}/{project} has no active deployment in {environment}",
            details={"environment": environment, "repository": repository, "project": project},
        )

    async def deployment_history(
        self, environment: str, repository: str, project: str, *, limit: int, offset: int
    ) -> Page[Deployment]:
        check_page(limit, offset)
        what = f"reading the deployments of {repository}/{project} in {environment}"
        await self._enter(what)
        check_text(what, environment, repository, project)
        rows = sorted(self._of_app(environment, repository, project), key=lambda d: d.id)
        rows.sort(key=lambda d: d.created_at, reverse=True)
        return Page([self._deployment(r) for r in rows[offset : offset + limit]], len(rows), limit, offset)

    async def releases_to_deploy(self, *, limit: int) -> list[Release]:
        check_page(limit, 0)
        await self._enter("listing releases to deploy")
        rows = sorted(
            (r for r in self._rt.rows.values() if r.id not in self._dt.planned), key=lambda r: (r.created_at, r.id)
        )
        return [self._release(r) for r in rows[:limit]]

    async def mark_deploys_planned(self, release_id: UUID) -> None:
        now = await self._enter(f"marking the deployments of release {release_id} planned")
        if release_id not in self._rt.rows:
            raise _no_release(release_id)
        self._dt.planned.setdefault(release_id, now)

    # -- approvals ------------------------------------------------------------------------------------

    async def create_approval(self, new: NewApproval) -> Approval:
        new.check()
        now = await self._enter(new.what)
        if new.release_id not in self._rt.rows:
            raise _no_release(new.release_id)
        if new.expires_at <= now:
            raise InvalidInputError(f"{new.what}: expires_at must be in the future", details={"field": "expires_at"})
        row = _ApprovalRow(
            id=uuid4(),
            release_id=new.release_id,
            environment=new.environment,
            approver=new.approver,
            justification=new.justification,
            expires_at=new.expires_at,
            status=ApprovalStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        self._dt.approvals[row.id] = row
        return self._approval(row, now)

    async def get_approval(self, approval_id: UUID) -> Approval:
        now = await self._enter(f"reading approval {approval_id}")
        return self._approval(self._approval_row(approval_id), now)

    async def revoke_approval(self, approval_id: UUID, revoked_by: str) -> Approval:
        what = f"revoking approval {approval_id}"
        now = await self._enter(what)
        check_text(what, revoked_by)
        row = self._approval_row(approval_id)
        if row.status is ApprovalStatus.ACTIVE and row.expires_at > now:
            row.status, row.revoked_by, row.updated_at = ApprovalStatus.REVOKED, revoked_by[:256] or "unknown", now
        approval = self._approval(row, now)
        if approval.status is ApprovalStatus.EXPIRED:
            raise ConflictError(
                f"{what}: it expired at {approval.expires_at.isoformat()}; an expired approval allows nothing",
                details={"approval_id": str(approval_id), "status": "expired"},
            )
        return approval

    async def active_approval(self, release_id: UUID, environment: str) -> Approval | None:
        what = f"reading the approval of release {release_id} for {environment}"
        now = await self._enter(what)
        check_text(what, environment)
        found = [
            a
            for a in self._dt.approvals.values()
            if a.release_id == release_id
            and a.environment == environment
            and a.status is ApprovalStatus.ACTIVE
            and a.expires_at > now
        ]
        if not found:
            return None
        found.sort(key=lambda a: a.id)
        return self._approval(max(found, key=lambda a: a.expires_at), now)

    # -- helpers --------------------------------------------------------------------------------------

    def _deployment_row(self, deployment_id: UUID) -> _DeploymentRow:
        row = self._dt.deployments.get(deployment_id)
        if row is None:
            raise NotFoundError(
                f"deployment {deployment_id} does not exist", details={"deployment_id": str(deployment_id)}
            )
        return row

    def _approval_row(self, approval_id: UUID) -> _ApprovalRow:
        row = self._dt.approvals.get(approval_id)
        if row is None:
            raise NotFoundError(f"approval {approval_id} does not exist", details={"approval_id": str(approval_id)})
        return row

    def _same_app(self, other: _DeploymentRow, row: _DeploymentRow, repository_id: UUID) -> bool:
        release = self._rt.rows[other.release_id]
        return (
            other.environment == row.environment
            and release.repository_id == repository_id
            and release.project == self._rt.rows[row.release_id].project
        )

    def _of_app(self, environment: str, repository: str, project: str) -> list[_DeploymentRow]:
        repo_id = self._t.repository_by_name.get(repository)
        return [
            d
            for d in self._dt.deployments.values()
            if d.environment == environment
            and self._rt.rows[d.release_id].repository_id == repo_id
            and self._rt.rows[d.release_id].project == project
        ]

    def _deployment(self, row: _DeploymentRow) -> Deployment:
        release = self._rt.rows[row.release_id]
        return Deployment(
            id=row.id,
            release_id=row.release_id,
            repository=self._t.repositories[release.repository_id].name,
            project=release.project,
            environment=row.environment,
            release_number=release.number,
            commit_sha=release.commit_sha,
            oci_digest=release.oci_digest,
            status=row.status,
            gitops_commit=row.gitops_commit,
            deployed_by=row.deployed_by,
            reason=row.reason,
            approval_id=row.approval_id,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
        )

    def _approval(self, row: _ApprovalRow, now: datetime) -> Approval:
        release = self._rt.rows[row.release_id]
        expired = row.status is ApprovalStatus.ACTIVE and row.expires_at <= now
        return Approval(
            id=row.id,
            release_id=row.release_id,
            repository=self._t.repositories[release.repository_id].name,
            project=release.project,
            release_number=release.number,
            environment=row.environment,
            approver=row.approver,
            justification=row.justification,
            expires_at=row.expires_at,
            status=ApprovalStatus.EXPIRED if expired else row.status,
            revoked_by=row.revoked_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _no_release(release_id: UUID) -> NotFoundError:
    return NotFoundError(f"release {release_id} does not exist", details={"release_id": str(release_id)})


def _ended(what: str, status: str) -> ConflictError:
    return ConflictError(f"{what}: the deployment is already {status}", details={"status": status})

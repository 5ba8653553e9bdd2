"""``DeploymentStore`` and ``ApprovalStore`` on PostgreSQL, mixed into ``PostgresStore``.

A deployment row keeps its release's (repository, project) (a foreign key to ``releases_identity_key``
keeps the copy honest), so "one active per (environment, repository, project)" is the partial unique
index ``deployments_one_active``. Requests for one release are serialised by a row lock on the
release (the idempotency check and the insert see the same state); status changes lock the
deployment row. ``deployment_lock`` is a *session* advisory lock on its own pool connection, held
by the controller around the GitOps write and the status change that follows. A claim names its
claimer (``claimed_by``, migration 0013), whose renewals restamp ``claimed_at``; one not renewed for
the lease is taken over, and one its claimer released (both cleared) is claimable at once. An approval
is stored ``active`` until revoked and read as ``expired`` once ``expires_at`` has passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from forge.adapters._postgres_releases import _SELECT as _SELECT_RELEASES
from forge.adapters._postgres_releases import _release
from forge.adapters._postgres_rows import translate_errors
from forge.domain.entities import Approval, Deployment, Release
from forge.errors import ConflictError, ForgeError, InvalidInputError, NotFoundError
from forge.ports.store import CommittedDeployment, NewApproval, NewDeployment, Page, check_claim, check_page

__all__ = ["PostgresDeployments"]

#: The first key of the two-key session advisory locks on one app's deployments ("dep").
_DEPLOY_LOCK_CLASS = 0x646570

_DEPLOYMENT = """
    SELECT d.id, d.release_id, repo.name AS repository, d.project, d.environment, r.number AS release_number,
           r.commit_sha, r.oci_digest, d.status, d.gitops_commit, d.deployed_by, d.reason, d.approval_id, d.error,
           d.created_at, d.updated_at, d.completed_at {extra}
    FROM deployments d JOIN releases r ON r.id = d.release_id JOIN repositories repo ON repo.id = d.repository_id
"""
_SELECT_DEPLOYMENT = _DEPLOYMENT.format(extra="")
_SQL_HISTORY = (
    _DEPLOYMENT.format(extra=", count(*) OVER () AS total")
    + " WHERE d.environment = $1 AND repo.name = $2 AND d.project = $3"
    " ORDER BY d.created_at DESC, d.id LIMIT $4 OFFSET $5"
)
_SQL_LOCK_RELEASE = "SELECT id, repository_id, project FROM releases WHERE id = $1 FOR NO KEY UPDATE"
_SQL_SAME_REQUEST = """
    SELECT id FROM deployments WHERE release_id = $1 AND environment = $2 AND status IN ('pending', 'active')
    ORDER BY created_at DESC, id LIMIT 1
"""
_SQL_INSERT = """
    INSERT INTO deployments (release_id, repository_id, project, environment, deployed_by, reason, approval_id,
                             created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp(), clock_timestamp()) RETURNING id
"""
#: Claim up to $1 pending deployments for claimer $3: never claimed, or not renewed for $2 s (the lease).
_SQL_CLAIM = """
    UPDATE deployments SET claimed_at = now(), claimed_by = $3 WHERE id IN (
        SELECT id FROM deployments
        WHERE status = 'pending' AND committed_at IS NULL
          AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => $2))
        ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
    ) RETURNING id
"""
#: Renew claimer $2's claims on deployments $1; the ids it still holds (no other claimer took them over).
_SQL_RENEW_CLAIMS = """
    UPDATE deployments SET claimed_at = now() WHERE id = ANY($1::uuid[]) AND claimed_by = $2 RETURNING id
"""
#: Release claimer $2's claims on deployments $1 (claimable again at once); the ids released.
_SQL_RELEASE_CLAIMS = """
    UPDATE deployments SET claimed_at = NULL, claimed_by = NULL WHERE id = ANY($1::uuid[]) AND claimed_by = $2
    RETURNING id
"""
_SQL_RECORD_POINTER = """
    UPDATE deployments SET gitops_commit = $2, committed_at = now()
    WHERE id = $1 AND (committed_at IS NULL OR gitops_commit IS DISTINCT FROM $2)
"""
_SQL_COMMITTED = (
    _DEPLOYMENT.format(extra=", extract(epoch FROM now() - d.committed_at)::float8 AS waited")
    + " WHERE d.status = 'pending' AND d.committed_at IS NOT NULL ORDER BY d.committed_at, d.id LIMIT $1"
)
_SQL_LOCK_DEPLOYMENT = "SELECT status, environment, repository_id, project FROM deployments WHERE id = $1 FOR UPDATE"
_SQL_SUPERSEDE = """
    UPDATE deployments SET status = 'superseded'
    WHERE environment = $1 AND repository_id = $2 AND project = $3 AND status = 'active'
"""
_SQL_ACTIVATE = """
    UPDATE deployments SET status = 'active', gitops_commit = $2, error = NULL, completed_at = now() WHERE id = $1
"""
_SQL_FAIL = "UPDATE deployments SET status = 'failed', error = $2, completed_at = now() WHERE id = $1"
_SQL_TO_DEPLOY = f"{_SELECT_RELEASES} WHERE r.deploys_planned_at IS NULL ORDER BY r.created_at, r.id LIMIT $1"
_SQL_MARK_PLANNED = (
    "UPDATE releases SET deploys_planned_at = COALESCE(deploys_planned_at, now()) WHERE id = $1 RETURNING id"
)

_SELECT_APPROVAL = """
    SELECT a.id, a.release_id, repo.name AS repository, r.project, r.number AS release_number, a.environment,
           a.approver, a.justification, a.expires_at,
           CASE WHEN a.status = 'active' AND a.expires_at <= now() THEN 'expired' ELSE a.status END AS status,
           a.revoked_by, a.created_at, a.updated_at
    FROM approvals a JOIN releases r ON r.id = a.release_id JOIN repositories repo ON repo.id = r.repository_id
"""
_SQL_CREATE_APPROVAL = """
    WITH rel AS (SELECT id FROM releases WHERE id = $1),
    ins AS (
        INSERT INTO approvals (release_id, environment, approver, justification, expires_at)
        SELECT rel.id, $2, $3, $4, $5 FROM rel WHERE $5 > now() RETURNING id
    )
    SELECT (SELECT id FROM rel) AS release, (SELECT id FROM ins) AS id
"""
_SQL_REVOKE = """
    UPDATE approvals SET status = 'revoked', revoked_by = $2
    WHERE id = $1 AND status = 'active' AND expires_at > now() RETURNING id
"""
_SQL_ACTIVE_APPROVAL = (
    _SELECT_APPROVAL + " WHERE a.release_id = $1 AND a.environment = $2 AND a.status = 'active' "
    "AND a.expires_at > now() ORDER BY a.expires_at DESC, a.id LIMIT 1"
)

if TYPE_CHECKING:
    _Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


class PostgresDeployments:
    """The ``DeploymentStore`` and ``ApprovalStore`` methods of ``PostgresStore`` (which provides the pool)."""

    _pool: asyncpg.Pool[asyncpg.Record]

    # -- deployments ----------------------------------------------------------------------------------

    async def request_deployment(self, new: NewDeployment) -> tuple[Deployment, bool]:
        new.check()
        with translate_errors(new.what):
            async with self._pool.acquire() as conn, conn.transaction():
                release = await conn.fetchrow(_SQL_LOCK_RELEASE, new.release_id)
                if release is None:
                    raise _no_release(new.release_id)
                existing = await conn.fetchval(_SQL_SAME_REQUEST, new.release_id, new.environment)
                if existing is not None:
                    return await _deployment(conn, existing), False
                created = await conn.fetchval(
                    _SQL_INSERT,
                    new.release_id,
                    release["repository_id"],
                    release["project"],
                    new.environment,
                    new.requested_by,
                    new.reason,
                    new.approval_id,
                )
                return await _deployment(conn, created), True

    async def get_deployment(self, deployment_id: UUID) -> Deployment:
        with translate_errors(f"reading deployment {deployment_id}"):
            async with self._pool.acquire() as conn:
                return await _deployment(conn, deployment_id)

    async def claim_deployments(self, *, limit: int, claimer: str, lease: float) -> list[Deployment]:
        check_page(limit, 0)
        check_claim("claim_deployments", claimer, lease)
        with translate_errors("claiming pending deployments"):
            async with self._pool.acquire() as conn, conn.transaction():
                ids = [row["id"] for row in await conn.fetch(_SQL_CLAIM, limit, float(lease), claimer)]
                rows = await conn.fetch(f"{_SELECT_DEPLOYMENT} WHERE d.id = ANY($1) ORDER BY d.created_at, d.id", ids)
        return [_deployment_of(row) for row in rows]

    async def renew_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("renew_deployment_claims", claimer)
        if not deployment_ids:
            return set()
        with translate_errors("renewing claims on pending deployments"):
            rows = await self._pool.fetch(_SQL_RENEW_CLAIMS, list(deployment_ids), claimer)
        return {row["id"] for row in rows}

    async def release_deployment_claims(self, deployment_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        check_claim("release_deployment_claims", claimer)
        if not deployment_ids:
            return set()
        with translate_errors("releasing claims on pending deployments"):
            rows = await self._pool.fetch(_SQL_RELEASE_CLAIMS, list(deployment_ids), claimer)
        return {row["id"] for row in rows}

    async def record_pointer(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        what = f"recording the pointer of deployment {deployment_id}"
        with translate_errors(what):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await _lock_deployment(conn, deployment_id)
                if row["status"] != "pending":
                    raise _ended(what, row["status"])
                await conn.execute(_SQL_RECORD_POINTER, deployment_id, gitops_commit)
                return await _deployment(conn, deployment_id)

    async def committed_deployments(self, *, limit: int) -> list[CommittedDeployment]:
        check_page(limit, 0)
        with translate_errors("listing committed deployments"):
            rows = await self._pool.fetch(_SQL_COMMITTED, limit)
        return [CommittedDeployment(_deployment_of(r), max(0.0, float(r["waited"]))) for r in rows]

    @contextlib.asynccontextmanager
    async def deployment_lock(self, environment: str, repository: str, project: str) -> AsyncIterator[None]:
        key = f"{environment}/{repository}/{project}"
        with translate_errors(f"locking the deployments of {key}"):
            conn = await self._pool.acquire()
        try:
            with translate_errors(f"locking the deployments of {key}"):
                await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _DEPLOY_LOCK_CLASS, key)
            try:
                yield
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _DEPLOY_LOCK_CLASS, key)
                except BaseException:  # the lock must not outlive us: closing the session releases it
                    conn.terminate()
                    raise
        finally:
            await self._pool.release(conn)

    async def complete_deployment(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        what = f"activating deployment {deployment_id}"
        with translate_errors(what):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await _lock_deployment(conn, deployment_id)
                if row["status"] == "pending":
                    await conn.execute(_SQL_SUPERSEDE, row["environment"], row["repository_id"], row["project"])
                    await conn.execute(_SQL_ACTIVATE, deployment_id, gitops_commit)
                elif row["status"] != "active":
                    raise _ended(what, row["status"])
                return await _deployment(conn, deployment_id)

    async def fail_deployment(self, deployment_id: UUID, error: str) -> Deployment:
        what = f"failing deployment {deployment_id}"
        with translate_errors(what):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await _lock_deployment(conn, deployment_id)
                if row["status"] == "pending":
                    await conn.execute(_SQL_FAIL, deployment_id, error[:4000] or "failed")
                elif row["status"] != "failed":
                    raise _ended(what, row["status"])
                return await _deployment(conn, deployment_id)

    async def active_deployment(self, environment: str, repository: str, project: str) -> Deployment:
        with translate_errors(f"reading the active deployment of {repository}/{project} in {environment}"):
            row = await self._pool.fetchrow(
                f"{_SELECT_DEPLOYMENT} WHERE d.environment = $1 AND repo.name = $2 AND d.project = $3 "
                "AND d.status = 'active'",
                environment,
                repository,
                project,
            )
        if row is None:
            raise NotFoundError(
                f"{repository}/{project} has no active deployment in {environment}",
                details={"environment": environment, "repository": repository, "project": project},
            )
        return _deployment_of(row)

    async def deployment_history(
        self, environment: str, repository: str, project: str, *, limit: int, offset: int
    ) -> Page[Deployment]:
        check_page(limit, offset)
        with translate_errors(f"reading the deployments of {repository}/{project} in {environment}"):
            rows = await self._pool.fetch(_SQL_HISTORY, environment, repository, project, limit, offset)
            if rows:
                total = rows[0]["total"]
            else:
                total = await self._pool.fetchval(
                    "SELECT count(*) FROM deployments d JOIN repositories repo ON repo.id = d.repository_id "
                    "WHERE d.environment = $1 AND repo.name = $2 AND d.project = $3",
                    environment,
                    repository,
                    project,
                )
        return Page([_deployment_of(r) for r in rows], int(total), limit, offset)

    async def releases_to_deploy(self, *, limit: int) -> list[Release]:
        check_page(limit, 0)
        with translate_errors("listing releases to deploy"):
            rows = await self._pool.fetch(_SQL_TO_DEPLOY, limit)
        return [_release(r) for r in rows]

    async def mark_deploys_planned(self, release_id: UUID) -> None:
        with translate_errors(f"marking the deployments of release {release_id} planned"):
            done = await self._pool.fetchval(_SQL_MARK_PLANNED, release_id)
        if done is None:
            raise _no_release(release_id)

    # -- approvals ------------------------------------------------------------------------------------

    async def create_approval(self, new: NewApproval) -> Approval:
        new.check()
        with translate_errors(new.what):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    _SQL_CREATE_APPROVAL,
                    new.release_id,
                    new.environment,
                    new.approver,
                    new.justification,
                    new.expires_at,
                )
                assert row is not None
                if row["release"] is None:
                    raise _no_release(new.release_id)
                if row["id"] is None:
                    raise InvalidInputError(
                        f"{new.what}: expires_at must be in the future", details={"field": "expires_at"}
                    )
                return await _approval(conn, row["id"])

    async def get_approval(self, approval_id: UUID) -> Approval:
        with translate_errors(f"reading approval {approval_id}"):
            async with self._pool.acquire() as conn:
                return await _approval(conn, approval_id)

    async def revoke_approval(self, approval_id: UUID, revoked_by: str) -> Approval:
        what = f"revoking approval {approval_id}"
        with translate_errors(what):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.fetchval(_SQL_REVOKE, approval_id, revoked_by[:256] or "unknown")
                approval = await _approval(conn, approval_id)
        if approval.status == "expired":
            raise ConflictError(
                f"{what}: it expired at {approval.expires_at.isoformat()}; an expired approval allows nothing",
                details={"approval_id": str(approval_id), "status": "expired"},
            )
        return approval

    async def active_approval(self, release_id: UUID, environment: str) -> Approval | None:
        with translate_errors(f"reading the approval of release {release_id} for {environment}"):
            row = await self._pool.fetchrow(_SQL_ACTIVE_APPROVAL, release_id, environment)
        return _approval_of(row) if row is not None else None


async def _deployment(conn: _Conn, deployment_id: UUID) -> Deployment:
    row = await conn.fetchrow(f"{_SELECT_DEPLOYMENT} WHERE d.id = $1", deployment_id)
    if row is None:
        raise NotFoundError(f"deployment {deployment_id} does not exist", details={"deployment_id": str(deployment_id)})
    return _deployment_of(row)


async def _lock_deployment(conn: _Conn, deployment_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(_SQL_LOCK_DEPLOYMENT, deployment_id)
    if row is None:
        raise NotFoundError(f"deployment {deployment_id} does not exist", details={"deployment_id": str(deployment_id)})
    return row


async def _approval(conn: _Conn, approval_id: UUID) -> Approval:
    row = await conn.fetchrow(f"{_SELECT_APPROVAL} WHERE a.id = $1", approval_id)
    if row is None:
        raise NotFoundError(f"approval {approval_id} does not exist", details={"approval_id": str(approval_id)})
    return _approval_of(row)


def _deployment_of(row: asyncpg.Record) -> Deployment:
    values: dict[str, Any] = {k: row[k] for k in row.keys() if k not in ("total", "waited")}  # noqa: SIM118 - a Record
    try:
        return Deployment.model_validate(values)
    except ValueError as exc:
        raise ForgeError(f"Deployment row {row['id']} is invalid: {exc}") from exc


def _approval_of(row: asyncpg.Record) -> Approval:
    try:
        return Approval.model_validate(dict(row.items()))
    except ValueError as exc:
        raise ForgeError(f"Approval row {row['id']} is invalid: {exc}") from exc


def _no_release(release_id: UUID) -> NotFoundError:
    return NotFoundError(f"release {release_id} does not exist", details={"release_id": str(release_id)})


def _ended(what: str, status: str) -> ConflictError:
    return ConflictError(f"{what}: the deployment is already {status}", details={"status": status})

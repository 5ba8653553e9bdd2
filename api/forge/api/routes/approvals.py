"""``/v1/approvals``: an approver allows one release into one environment for a while (DESIGN §4, §7).

An approval names the release (``repository``, ``project``, ``ref``), the environment, the approver
(the token's subject), a justification (required) and when it expires (``expires_in`` seconds, one
minute to 30 days, default a day). Environments with ``requires_approval`` (by default staging and
production) take a deployment only while an approval of that release is active and unexpired, at
the request and again when the controller writes the pointer. Revoking is immediate; an expired
approval reads ``expired`` and cannot be revoked (409).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody

from forge.api.errors import problem_spec as _problem
from forge.api.routes.deployments import deployment_stores, release_environment, who
from forge.api.schemas.deployments import ApprovalOut, CreateApproval
from forge.api.services import Services
from forge.errors import NotFoundError
from forge.ports.store import NewApproval

__all__ = ["ApprovalsController"]


class ApprovalsController(Controller):
    path = "/v1/approvals"
    tags = ["approvals"]

    @post(
        "/",
        status_code=201,
        summary="Approve a release for an environment",
        responses={
            400: _problem("Invalid body, a ref that can be no release, or an unknown environment (named)"),
            404: _problem("No such repository, project or release"),
        },
    )
    async def create_approval(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateApproval], services: Services
    ) -> ApprovalOut:
        _, approvals = deployment_stores(services)
        release, _ = await release_environment(services, data.repository, data.project, data.ref, data.environment)
        approval = await approvals.create_approval(
            NewApproval(
                release_id=release.id,
                environment=data.environment,
                approver=who(request),
                justification=data.justification,
                expires_at=datetime.now(UTC) + timedelta(seconds=data.expires_in),
            )
        )
        return ApprovalOut.of(approval)

    @post(
        "/{approval_id:uuid}/revoke",
        status_code=200,
        summary="Revoke an approval",
        description="A revoked approval allows nothing from now on; revoking again answers it unchanged.",
        responses={404: _problem("No such approval"), 409: _problem("The approval has expired")},
    )
    async def revoke_approval(
        self, request: Request[Any, Any, Any], services: Services, approval_id: FromPath[UUID]
    ) -> ApprovalOut:
        _, approvals = deployment_stores(services)
        return ApprovalOut.of(await approvals.revoke_approval(approval_id, who(request)))

    @get(
        "/{release_id:uuid}/{environment:str}",
        summary="The active, unexpired approval of a release for an environment",
        description="The one that expires last when there are several.",
        responses={404: _problem("The release has no active approval for the environment")},
    )
    async def active_approval(
        self, services: Services, release_id: FromPath[UUID], environment: FromPath[str]
    ) -> ApprovalOut:
        _, approvals = deployment_stores(services)
        approval = await approvals.active_approval(release_id, environment)
        if approval is None:
            raise NotFoundError(
                f"release {release_id} has no active approval for {environment}",
                details={"release_id": str(release_id), "environment": environment},
            )
        return ApprovalOut.of(approval)

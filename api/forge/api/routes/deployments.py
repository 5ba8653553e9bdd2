"""``/v1/deployments``: ask for a release in an environment, and read what is deployed (DESIGN §7).

``POST`` checks the promotion policy of the release's ``.forge/repo.yaml`` ``environments`` (carried
by its run's discovery; the default dev → staging → production without one): an unknown environment
is a 400 naming the known ones; an environment that does not take the release (its branches or
triggers) or that needs an approval while the release has no active, unexpired one is a 409 with the
reason. A deployment that passes is ``pending`` (202) until the controller has committed its
ReleasePointer to the GitOps repository (then ``active``) or failed with the cause; asking again for
a release already pending or active in the environment answers that deployment (200). The
controller checks the policy again right before it writes, so an approval revoked in between fails
the deployment. Rolling back is deploying an earlier release.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from forge.api.errors import problem_spec as _problem
from forge.api.schemas import MAX_OFFSET, PageOut
from forge.api.schemas.deployments import CreateDeployment, DeploymentOut
from forge.api.services import ApiServices, Services
from forge.domain.deploy_policy import check_policy, deploy_intent
from forge.domain.discovery import DeployIntent, DiscoveryResult
from forge.domain.entities import Release
from forge.errors import AuthenticationError, NotFoundError, ServiceUnavailableError
from forge.ports import Identity
from forge.ports.store import ApprovalStore, DeploymentStore, NewDeployment

__all__ = ["DeploymentsController", "deployment_stores", "release_environment", "who"]


def who(request: Request[Any, Any, Any]) -> str:
    """The subject of the request's verified token (set by ``forge.api.auth``'s guard)."""
    identity = request.scope.get("user")
    if not isinstance(identity, Identity):
        raise AuthenticationError("missing bearer token", code="missing_token")
    return identity.subject[:255]


def deployment_stores(services: ApiServices) -> tuple[DeploymentStore, ApprovalStore]:
    if services.deployments is None or services.approvals is None:
        raise ServiceUnavailableError("deployments are not configured on this API")
    return services.deployments, services.approvals


async def release_environment(
    services: ApiServices, repository: str, project: str, ref: str, environment: str
) -> tuple[Release, DeployIntent]:
    """The release ``ref`` and the rules of ``environment`` for it (404 no release, 400 unknown environment)."""
    release = await services.releases.get_release(repository, project, ref)
    discovery: DiscoveryResult | None = None
    if release.run_id is not None:
        try:
            discovery = (await services.runs.get_run(release.run_id)).discovery
        except NotFoundError:
            discovery = None
    return release, deploy_intent(release, discovery, environment)


def _location(d: DeploymentOut | Any) -> str:
    return f"/v1/deployments/{d.environment}/{d.repository}/{d.project}"


_APP_PATH = "/{environment:str}/{owner:str}/{repo:str}/{project:str}"


class DeploymentsController(Controller):
    path = "/v1/deployments"
    tags = ["deployments"]

    @post(
        "/",
        status_code=202,
        summary="Deploy a release to an environment",
        description="202 with the pending deployment (the controller commits the pointer, then it is `active`); "
        "200 with the deployment when the release is already pending or active there. `Location` is the "
        "app's deployment in the environment.",
        responses={
            200: ResponseSpec(DeploymentOut, description="The release is already pending or active in the environment"),
            400: _problem("Invalid body, a ref that can be no release, or an unknown environment (named)"),
            404: _problem("No such repository, project or release"),
            409: _problem("The policy refuses it: the environment does not take the release, or needs an approval"),
        },
    )
    async def create_deployment(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateDeployment], services: Services
    ) -> Response[DeploymentOut]:
        deployments, approvals = deployment_stores(services)
        release, intent = await release_environment(services, data.repository, data.project, data.ref, data.environment)
        approval = await approvals.active_approval(release.id, data.environment) if intent.requires_approval else None
        check_policy(release, intent, approval, datetime.now(UTC))
        deployment, created = await deployments.request_deployment(
            NewDeployment(
                release_id=release.id,
                environment=data.environment,
                requested_by=who(request),
                reason=data.reason,
                approval_id=approval.id if approval is not None else None,
            )
        )
        out = DeploymentOut.of(deployment)
        return Response(out, status_code=202 if created else 200, headers={"Location": _location(out)})

    @get(
        "/{deployment_id:uuid}",
        summary="One deployment, by id",
        responses={404: _problem("No such deployment")},
    )
    async def get_deployment(self, services: Services, deployment_id: FromPath[UUID]) -> DeploymentOut:
        deployments, _ = deployment_stores(services)
        return DeploymentOut.of(await deployments.get_deployment(deployment_id))

    @get(
        _APP_PATH,
        summary="The active deployment of a project in an environment",
        responses={404: _problem("Nothing of the project is active in the environment")},
    )
    async def active_deployment(
        self,
        services: Services,
        environment: FromPath[str],
        owner: FromPath[str],
        repo: FromPath[str],
        project: FromPath[str],
    ) -> DeploymentOut:
        deployments, _ = deployment_stores(services)
        return DeploymentOut.of(await deployments.active_deployment(environment, f"{owner}/{repo}", project))

    @get(
        f"{_APP_PATH}/history",
        summary="Every deployment of a project in an environment, newest first",
        responses={400: _problem("limit or offset out of range")},
    )
    async def deployment_history(
        self,
        services: Services,
        environment: FromPath[str],
        owner: FromPath[str],
        repo: FromPath[str],
        project: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Deployments per page")] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="Deployments to skip")] = 0,
    ) -> PageOut[DeploymentOut]:
        deployments, _ = deployment_stores(services)
        page = await deployments.deployment_history(environment, f"{owner}/{repo}", project, limit=limit, offset=offset)
        return PageOut(items=[DeploymentOut.of(d) for d in page.items], total=page.total, limit=limit, offset=offset)

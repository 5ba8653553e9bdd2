"""``/v1/runs``: pipeline runs, idempotent on (repository, commit, ref); their executions; cancelling them."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from forge.api.errors import problem_spec as _problem
from forge.api.schemas import MAX_OFFSET, CreateRun, ExecutionsOut, PageOut, RunOut
from forge.api.schemas.documents import ETAG_HEADER, NOT_MODIFIED, TOTAL_HEADER, document_response
from forge.api.services import Services
from forge.domain.entities import REPO_NAME_RE
from forge.domain.status import Status
from forge.errors import AuthenticationError
from forge.ports import Identity, NewRun, RunFilter

__all__ = ["DEFAULT_STEPS_PAGE", "MAX_STEPS_PAGE", "RunsController"]

#: Steps of one executions page by default: every run up to this size is answered whole, as before paging.
DEFAULT_STEPS_PAGE = 1000
MAX_STEPS_PAGE = 10_000


def _who(request: Request[Identity, Any, Any]) -> str:
    """The subject of the request's verified token (set by ``forge.api.auth``'s guard)."""
    identity = request.scope.get("user")
    if not isinstance(identity, Identity):
        raise AuthenticationError("missing bearer token", code="missing_token")
    return identity.subject[:255]


_BAD_PAGE = {400: _problem("A query parameter is out of range or malformed (the problem names it)")}
_NO_RUN = {404: _problem("No such run")}


class RunsController(Controller):
    path = "/v1/runs"
    tags = ["runs"]

    @post(
        "/",
        summary="Create a pipeline run",
        description="Returns 201 with the new run, or 200 with the existing run of the same repository, commit and "
        "ref (branch or tag; a run has one or neither: both is a 400).",
        responses={
            400: _problem("Invalid body (the problem names the field)"),
            404: _problem("The repository is not registered"),
            409: _problem("The repository is disabled"),
        },
    )
    async def create_run(
        self, request: Request[Identity, Any, Any], data: JSONBody[CreateRun], services: Services
    ) -> Response[RunOut]:
        run, created = await services.runs.create_run(NewRun(**data.model_dump() | {"triggered_by": _who(request)}))
        return Response(RunOut.of(run), status_code=201 if created else 200, headers={"Location": f"/v1/runs/{run.id}"})

    @get(
        "/",
        summary="List pipeline runs, newest first",
        description="Conditional: If-None-Match with the page's ETag answers 304 while the page is unchanged.",
        response_headers=[ETAG_HEADER],
        responses={**NOT_MODIFIED, **_BAD_PAGE},
    )
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        repository: Annotated[
            str | None, QueryParameter(pattern=REPO_NAME_RE.pattern, max_length=200, description="owner/repo")
        ] = None,
        branch: Annotated[str | None, QueryParameter(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=255)] = None,
        status: FromQuery[Status | None] = None,
        commit_sha: Annotated[str | None, QueryParameter(pattern=r"^[0-9a-f]{40}$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Runs per page")] = 50,
        offset: Annotated[
            int, QueryParameter(ge=0, le=MAX_OFFSET, description=f"Runs to skip (at most {MAX_OFFSET:,})")
        ] = 0,
    ) -> Response[PageOut[RunOut]]:
        flt = RunFilter(repository=repository, branch=branch, status=status, commit_sha=commit_sha)
        return document_response(request, await services.runs.runs_json(flt, limit=limit, offset=offset), "l")

    @get(
        "/{run_id:uuid}",
        summary="One pipeline run with its discovery",
        description="The discovery is served as stored (JSON object keys in PostgreSQL jsonb order). "
        "Conditional: the ETag changes whenever the run does; If-None-Match with it answers 304.",
        response_headers=[ETAG_HEADER],
        responses={**NOT_MODIFIED, **_NO_RUN},
    )
    async def get_run(
        self, request: Request[Any, Any, Any], run_id: FromPath[UUID], services: Services
    ) -> Response[RunOut]:
        return document_response(request, await services.runs.run_json(run_id), "r")

    @get(
        "/{run_id:uuid}/executions",
        summary="The run's phases, tasks and steps",
        description="Statuses, timestamps, exit codes, attempts and log keys; empty before the workflow is planned. "
        f"Paged over steps in tree order: a page holds at most `limit` steps (default {DEFAULT_STEPS_PAGE}, so "
        f"every run of up to {DEFAULT_STEPS_PAGE} steps is answered whole) under the phases and tasks they "
        "belong to; phases and tasks without steps are on the page at offset 0. X-Total-Count is the number "
        "of steps of the run. Conditional: the ETag changes whenever the page does; If-None-Match with it "
        "answers 304.",
        response_headers=[ETAG_HEADER, TOTAL_HEADER],
        responses={**NOT_MODIFIED, **_BAD_PAGE, **_NO_RUN},
    )
    async def get_executions(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[UUID],
        services: Services,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_STEPS_PAGE, description="Steps per page")
        ] = DEFAULT_STEPS_PAGE,
        offset: Annotated[
            int, QueryParameter(ge=0, le=MAX_OFFSET, description=f"Steps to skip in tree order (≤ {MAX_OFFSET:,})")
        ] = 0,
    ) -> Response[ExecutionsOut]:
        executions = await services.executions.executions_json(run_id, limit=limit, offset=offset)
        return document_response(request, executions, f"x{limit}.{offset}.", total=True)

    @delete(
        "/{run_id:uuid}",
        status_code=202,
        summary="Cancel a pipeline run",
        description="Records the request and returns 202 with the run; the controller stops its workflow and "
        "ends it as cancelled. 409 when the run has already finished.",
        responses={**_NO_RUN, 409: _problem("The run has already finished")},
    )
    async def cancel_run(self, run_id: FromPath[UUID], services: Services) -> RunOut:
        return RunOut.of(await services.runs.request_cancel(run_id))

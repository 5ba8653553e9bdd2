"""``/v1/runs``: pipeline runs, idempotent on (repository, commit); their executions; cancelling them."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from forge.api.schemas import CreateRun, ExecutionsOut, PageOut, RunOut
from forge.api.services import Services
from forge.domain.status import Status
from forge.ports import NewRun, RunFilter

__all__ = ["RunsController"]


class RunsController(Controller):
    path = "/v1/runs"
    tags = ["runs"]

    @post(
        "/",
        summary="Create a pipeline run",
        description="Returns 201 with the new run, or 200 with the existing run of the same repository and commit.",
    )
    async def create_run(self, data: JSONBody[CreateRun], services: Services) -> Response[RunOut]:
        run, created = await services.runs.create_run(NewRun(**data.model_dump()))
        return Response(RunOut.of(run), status_code=201 if created else 200, headers={"Location": f"/v1/runs/{run.id}"})

    @get("/", summary="List pipeline runs, newest first")
    async def list_runs(
        self,
        services: Services,
        repository: FromQuery[str | None] = None,
        branch: FromQuery[str | None] = None,
        status: FromQuery[Status | None] = None,
        commit_sha: Annotated[str | None, QueryParameter(pattern=r"^[0-9a-f]{40}$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> PageOut[RunOut]:
        flt = RunFilter(repository=repository, branch=branch, status=status, commit_sha=commit_sha)
        page = await services.runs.list_runs(flt, limit=limit, offset=offset)
        return PageOut(items=[RunOut.of(r) for r in page.items], total=page.total, limit=limit, offset=offset)

    @get("/{run_id:uuid}", summary="One pipeline run with its discovery")
    async def get_run(self, run_id: FromPath[UUID], services: Services) -> RunOut:
        return RunOut.of(await services.runs.get_run(run_id))

    @get(
        "/{run_id:uuid}/executions",
        summary="The run's phases, tasks and steps",
        description="Statuses, timestamps, exit codes, attempts and log keys; empty before the workflow is planned.",
    )
    async def get_executions(self, run_id: FromPath[UUID], services: Services) -> ExecutionsOut:
        return ExecutionsOut.of(await services.executions.get_executions(run_id))

    @delete(
        "/{run_id:uuid}",
        status_code=202,
        summary="Cancel a pipeline run",
        description="Records the request and returns 202 with the run; the controller stops its workflow and "
        "ends it as cancelled. 409 when the run has already finished.",
    )
    async def cancel_run(self, run_id: FromPath[UUID], services: Services) -> RunOut:
        return RunOut.of(await services.runs.request_cancel(run_id))

"""``/v1/releases``: the releases the controller recorded, listed and resolved by ref (DESIGN §7).

A ref is resolved in this order: an exact alias (a release number is one: ``42``; so are a git tag
``v1.2.0`` and ``<branch>-<number>``, ``main-42``), then a commit-sha prefix of at least 7 hex digits.
A prefix several releases share is a 409 naming their numbers; a ref no release answers to is a
404; one that can be no alias nor prefix is a 400. ``docs/releases-api.md`` has the details.

``POST /v1/releases`` asks for a manual release of a project at a commit: a release that exists is
answered at once (200); otherwise a run of the commit that releases only that project is created (or
the one already asked for is returned) with 202 and the run's ``Location``: its checks run, then the
release phase, and ``GET /v1/releases?run_id=`` shows the release once recorded.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from forge.api.errors import problem_spec as _problem
from forge.api.schemas import MAX_OFFSET, PageOut, RunOut
from forge.api.schemas.releases import CreateRelease, ReleaseOut
from forge.api.services import Services
from forge.domain.entities import REPO_NAME_RE, Trigger
from forge.ports import NewRun
from forge.ports.store import ReleaseFilter

__all__ = ["ReleasesController"]

_PROJECT = r"^[a-z][a-z0-9-]*$"


class ReleasesController(Controller):
    path = "/v1/releases"
    tags = ["releases"]

    @post(
        "/",
        status_code=202,
        summary="Ask for a manual release of a project at a commit",
        description="200 with the release when the project is already released at that commit. Otherwise 202 "
        "with the run that makes it (created, or the one already asked for; `Location: /v1/runs/{id}`): a run "
        "of the commit with trigger `manual` whose `release_projects` is the project. Its discovery fails "
        "(`invalid_config`) when the project does not exist at the commit or has no `release.on: "
        "[{manual: true}]` rule.",
        responses={
            200: ResponseSpec(ReleaseOut, description="The project is already released at that commit"),
            400: _problem("Invalid body (the problem names the field)"),
            404: _problem("The repository is not registered"),
            409: _problem("The repository is disabled"),
        },
    )
    async def create_release(self, data: JSONBody[CreateRelease], services: Services) -> Response[RunOut | ReleaseOut]:
        existing = await services.releases.list_releases(
            ReleaseFilter(repository=data.repository, project=data.project, commit_sha=data.commit_sha),
            limit=1,
            offset=0,
        )
        if existing.items:
            return Response(ReleaseOut.of(existing.items[0]), status_code=200)
        run, _ = await services.runs.create_run(
            NewRun(
                repository=data.repository,
                commit_sha=data.commit_sha,
                branch=data.branch,
                trigger=Trigger.MANUAL,
                triggered_by=data.requested_by,
                release_projects=(data.project,),
            )
        )
        return Response(RunOut.of(run), status_code=202, headers={"Location": f"/v1/runs/{run.id}"})

    @get(
        "/",
        summary="List releases, newest first",
        description="Newest first: by creation, so by number within a project. Filters combine with AND.",
        responses={400: _problem("A filter, limit or offset is out of range or malformed (the problem names it)")},
    )
    async def list_releases(
        self,
        services: Services,
        repository: Annotated[
            str | None, QueryParameter(pattern=REPO_NAME_RE.pattern, max_length=200, description="owner/repo")
        ] = None,
        project: Annotated[str | None, QueryParameter(pattern=_PROJECT, max_length=255)] = None,
        run_id: Annotated[UUID | None, QueryParameter(description="The run that made the release")] = None,
        commit_sha: Annotated[str | None, QueryParameter(pattern=r"^[0-9a-f]{40}$")] = None,
        trigger: Annotated[Trigger | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Releases per page")] = 50,
        offset: Annotated[
            int, QueryParameter(ge=0, le=MAX_OFFSET, description=f"Releases to skip (at most {MAX_OFFSET:,})")
        ] = 0,
    ) -> PageOut[ReleaseOut]:
        flt = ReleaseFilter(
            repository=repository, project=project, run_id=run_id, commit_sha=commit_sha, trigger=trigger
        )
        page = await services.releases.list_releases(flt, limit=limit, offset=offset)
        return PageOut(items=[ReleaseOut.of(r) for r in page.items], total=page.total, limit=limit, offset=offset)

    @get(
        "/{owner:str}/{repo:str}/{project:str}/{ref:path}",
        summary="One release, by number, tag, alias or commit prefix",
        description="`ref` is resolved as an exact alias first (numbers, tags, `<branch>-<number>`), then as a "
        "commit-sha prefix of at least 7 hex digits. A ref holding `/` (a branch alias such as "
        "`feature/x-4`) is given as is.",
        responses={
            400: _problem("The ref can be no alias nor commit prefix (the problem names `ref`)"),
            404: _problem("No release of the project answers to the ref (or no such repository or project)"),
            409: _problem("The commit prefix matches several releases (the problem lists their numbers)"),
        },
    )
    async def get_release(
        self,
        services: Services,
        owner: FromPath[str],
        repo: FromPath[str],
        project: FromPath[str],
        ref: FromPath[str],
    ) -> ReleaseOut:
        release = await services.releases.get_release(f"{owner}/{repo}", project, ref.removeprefix("/"))
        return ReleaseOut.of(release)

"""``/v1/repositories``: repositories are registered before runs are accepted for them."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from forge.api.schemas import CreateRepository, PageOut, RepositoryOut
from forge.api.services import Services
from forge.ports import NewRepository

__all__ = ["RepositoriesController"]


class RepositoriesController(Controller):
    path = "/v1/repositories"
    tags = ["repositories"]

    @post("/", summary="Register a repository (idempotent on name)")
    async def register(self, data: JSONBody[CreateRepository], services: Services) -> Response[RepositoryOut]:
        repo, created = await services.repositories.register_repository(NewRepository(**data.model_dump()))
        return Response(RepositoryOut.of(repo), status_code=201 if created else 200)

    @get("/", summary="List repositories")
    async def list_repositories(
        self,
        services: Services,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> PageOut[RepositoryOut]:
        page = await services.repositories.list_repositories(limit=limit, offset=offset)
        return PageOut(items=[RepositoryOut.of(r) for r in page.items], total=page.total, limit=limit, offset=offset)

    @get("/{owner:str}/{name:str}", summary="One repository")
    async def get_repository(self, owner: FromPath[str], name: FromPath[str], services: Services) -> RepositoryOut:
        return RepositoryOut.of(await services.repositories.get_repository(f"{owner}/{name}"))

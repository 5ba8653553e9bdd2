"""Litestar application factory."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Tag

from forge.api.errors import EXCEPTION_HANDLERS
from forge.api.routes.events import run_events
from forge.api.routes.health import healthz, readyz
from forge.api.routes.logs import step_logs
from forge.api.routes.repositories import RepositoriesController
from forge.api.routes.runs import RunsController
from forge.api.routes.webhooks import WebhooksController
from forge.api.services import ApiServices

__all__ = ["create_app"]


def create_app(services: ApiServices, *, debug: bool = False) -> Litestar:
    """Build the app around already-connected services; the caller owns their lifetime."""

    def _services() -> ApiServices:
        return services

    return Litestar(
        route_handlers=[
            healthz,
            readyz,
            RepositoriesController,
            RunsController,
            step_logs,
            run_events,
            WebhooksController,
        ],
        dependencies={"services": Provide(_services, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Catalyst Forge API",
            version="1.0.0",
            path="/schema",
            tags=[
                Tag(name="runs", description="Pipeline runs, their executions and step logs"),
                Tag(name="repositories", description="Repositories runs are accepted for"),
                Tag(name="webhooks", description="Deliveries from source hosts (GitHub) that start runs"),
                Tag(name="health", description="Liveness and readiness"),
            ],
        ),
        debug=debug,
    )

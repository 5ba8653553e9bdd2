"""Litestar application factory."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import Litestar, Response, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Schema, Tag
from litestar.plugins.pydantic import PydanticSchemaPlugin
from litestar.routes import HTTPRoute

from forge.api.auth import document_auth, guard, security_components
from forge.api.auth.guard import require_guard
from forge.api.auth.limits import RateLimits, document_limits, document_retry_after
from forge.api.errors import EXCEPTION_HANDLERS
from forge.api.routes.approvals import ApprovalsController
from forge.api.routes.deployments import DeploymentsController
from forge.api.routes.events import run_events
from forge.api.routes.health import healthz, readyz
from forge.api.routes.logs import step_logs
from forge.api.routes.releases import ReleasesController
from forge.api.routes.repositories import RepositoriesController
from forge.api.routes.runs import RunsController
from forge.api.routes.webhooks import WebhooksController
from forge.api.services import ApiServices
from forge.observability.exposition import CONTENT_TYPE, render
from forge.observability.http import ObservedRequests
from forge.observability.runs import observed_runs

__all__ = ["create_app"]


def create_app(services: ApiServices, *, debug: bool = False, rate_limits: RateLimits | None = None) -> Litestar:
    """Build the app around already-connected services; the caller owns their lifetime.

    ``rate_limits``: the 429s of run creation and webhooks (the defaults of ``ApiSettings`` when not given).
    """
    limits = rate_limits if rate_limits is not None else RateLimits()
    services = replace(services, runs=observed_runs(services.runs))  # runs created: counted, and their trace's root

    def _services() -> ApiServices:
        return services

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            RepositoriesController,
            RunsController,
            ReleasesController,
            DeploymentsController,
            ApprovalsController,
            step_logs,
            run_events,
            WebhooksController,
        ],
        dependencies={"services": Provide(_services, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[ObservedRequests],  # requests by route and status, and their spans (docs/operations.md)
        plugins=[_ClosedModelsSchema()],
        before_request=guard(services.identity, limits),  # the role table of forge.api.auth.roles, on every route
        openapi_config=OpenAPIConfig(
            title="Catalyst Forge API",
            version="1.0.0",
            path="/schema",
            components=security_components(),
            tags=[
                Tag(name="runs", description="Pipeline runs, their executions and step logs"),
                Tag(name="releases", description="Releases recorded by the controller, resolved by number, tag or sha"),
                Tag(name="repositories", description="Repositories runs are accepted for"),
                Tag(name="webhooks", description="Deliveries from source hosts (GitHub) that start runs"),
                Tag(name="health", description="Liveness, readiness and metrics"),
            ],
        ),
        debug=debug,
    )
    _answer_options_with_every_method(app)
    require_guard(app)  # no route answers without the guard (fails here, not per request)
    document_auth(app)
    document_limits(app)
    limits.install(app)
    document_retry_after(app)  # builds the OpenAPI document once, now
    return app


@get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics of this API process",
    description="The Prometheus text format (docs/operations.md lists the series). Open, like the health "
    "endpoints: the Gateway does not route it; Prometheus scrapes it inside the cluster.",
    media_type=CONTENT_TYPE,
    sync_to_thread=False,
)
def metrics() -> Response[bytes]:
    return Response(render(), media_type=CONTENT_TYPE)


class _ClosedModelsSchema(PydanticSchemaPlugin):
    """A request model that refuses unknown fields (``extra="forbid"``) says so: ``additionalProperties: false``.

    Litestar's schema of a pydantic model leaves it out, so the OpenAPI allowed bodies the API refuses
    with 400 (schemathesis: "schema-valid request rejected").
    """

    @classmethod
    def for_pydantic_model(cls, field_definition: Any, schema_creator: Any) -> Schema:
        schema = super().for_pydantic_model(field_definition, schema_creator)
        if getattr(field_definition.annotation, "model_config", {}).get("extra") == "forbid":
            schema.additional_properties = False
        return schema


def _answer_options_with_every_method(app: Litestar) -> None:
    """Make ``OPTIONS`` name every method of its path (``Allow``), not only the first handler's.

    Litestar (2.25) registers a controller's handlers one at a time: the ``OPTIONS`` handler it
    generates for a path closes over the route built for the path's first handler, and routes
    rebuilt for the later handlers keep that handler (``OPTIONS /v1/runs`` answered
    ``Allow: OPTIONS, POST``). Each generated handler is pointed at its final route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = getattr(handler.fn, "__closure__", None) and handler.fn
            if fn is None or fn.__name__ != "options_handler" or "OPTIONS" not in handler.http_methods:
                continue
            for cell in fn.__closure__ or ():
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route

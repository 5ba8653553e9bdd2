"""The controller's workflow engine and deployments, observed: a ``submit workflow`` span in the run's
trace (Argo or the local engine), and deployments counted by outcome (``forge_deployments_total``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast
from uuid import UUID

from opentelemetry.trace import SpanKind

from forge.domain.entities import Deployment
from forge.observability.controller import DEPLOYMENTS
from forge.observability.tracing import parent_for, tracer
from forge.ports.engine import WorkflowEngine
from forge.ports.store import DeploymentStore

__all__ = ["RUN_LABEL", "observed_deployments", "traced_engine"]

RUN_LABEL = "forge.projectcatalyst.io/run-id"


def traced_engine(engine: WorkflowEngine) -> WorkflowEngine:
    """``engine`` whose ``submit`` of a run's workflow is a span of the run's trace."""
    return cast(WorkflowEngine, _TracedEngine(engine))


def observed_deployments(deployments: DeploymentStore) -> DeploymentStore:
    """``deployments``, counting pointer commits completed and deployments failed per environment."""
    return cast(DeploymentStore, _ObservedDeployments(deployments))


class _TracedEngine:
    __slots__ = ("_engine",)

    def __init__(self, engine: WorkflowEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        run = labels.get(RUN_LABEL)
        if run is None:
            return await self._engine.submit(template_name, parameters=parameters, labels=labels)
        with tracer().start_as_current_span(
            "submit workflow",
            context=parent_for(UUID(run)),
            kind=SpanKind.CLIENT,
            attributes={"forge.run_id": run, "forge.workflow_template": template_name},
        ) as span:
            name = await self._engine.submit(template_name, parameters=parameters, labels=labels)
            span.set_attribute("forge.workflow", name)
            return name


class _ObservedDeployments:
    __slots__ = ("_deployments",)

    def __init__(self, deployments: DeploymentStore) -> None:
        self._deployments = deployments

    def __getattr__(self, name: str) -> Any:
        return getattr(self._deployments, name)

    async def complete_deployment(self, deployment_id: UUID, gitops_commit: str) -> Deployment:
        deployment = await self._deployments.complete_deployment(deployment_id, gitops_commit)
        DEPLOYMENTS.labels(deployment.environment, "committed").inc()
        return deployment

    async def fail_deployment(self, deployment_id: UUID, error: str) -> Deployment:
        deployment = await self._deployments.fail_deployment(deployment_id, error)
        DEPLOYMENTS.labels(deployment.environment, "failed").inc()
        return deployment

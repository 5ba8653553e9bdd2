"""``forge-controller``: the composition root of the controller process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from forge.adapters._breakers import on_state_change
from forge.adapters.argo_workflows import ArgoWorkflowEngine
from forge.adapters.github_statuses import GithubStatuses
from forge.adapters.k8s_argocd import ArgoCDApplications
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.oras_registry import OrasRegistry
from forge.adapters.postgres_store import PostgresStore
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.controller.leader import run_as_leader
from forge.controller.loop import ControllerServices, run_controller
from forge.domain.messages import STREAMS
from forge.gitops import GitOpsWriter
from forge.jobs.dispatch import Dispatcher
from forge.jobs.nats_permissions import CONTROLLER_INBOX
from forge.observability.breakers import record_breaker_state
from forge.ports import DeployerStatus, MessageBus, SourceHost, WorkflowEngine
from forge.runtime import configure_logging, load_settings, run_service, service_parser
from forge.settings import Settings
from forge.workflows.engine import LocalWorkflowEngine
from forge.workflows.steps.entry import run_step

__all__ = ["build", "main"]


@contextlib.asynccontextmanager
async def _engine(settings: Settings, bus: MessageBus, dispatcher: Dispatcher) -> AsyncIterator[WorkflowEngine]:
    if settings.engine.kind == "argo":
        async with ArgoWorkflowEngine.from_settings(settings.engine) as argo:
            yield argo
        return

    async def step_runner(argv: list[str]) -> tuple[int, str, str]:
        outcome = await run_step(argv, bus=bus, timeouts=settings.timeouts, dispatcher=dispatcher)
        return outcome.exit_code, outcome.stdout, outcome.stderr

    async with LocalWorkflowEngine(
        step_runner=step_runner, max_parallel=settings.engine.max_parallel, namespace=settings.engine.namespace
    ) as local:
        yield local


@contextlib.asynccontextmanager
async def _source_host(settings: Settings) -> AsyncIterator[SourceHost | None]:
    """GitHub commit statuses when a token is configured, else none."""
    if settings.github.token is None:
        yield None
        return
    async with GithubStatuses.from_settings(settings.github) as gh:
        yield gh


@contextlib.asynccontextmanager
async def _argocd(settings: Settings) -> AsyncIterator[DeployerStatus | None]:
    """Argo CD Application health when ``FORGE_ARGOCD__ENABLED`` (and a GitOps repository), else none."""
    if not (settings.argocd.enabled and settings.gitops.url):
        yield None
        return
    applications = ArgoCDApplications.from_settings(settings.argocd)
    try:
        yield applications
    finally:
        await applications.close()


def _gitops(settings: Settings) -> GitOpsWriter | None:
    """The GitOps writer when ``FORGE_GITOPS__URL`` is set, else none (nothing is deployed)."""
    if not settings.gitops.url:
        return None
    return GitOpsWriter.for_settings(Pygit2GitOps.from_settings(settings.gitops), settings.gitops)


@contextlib.asynccontextmanager
async def build(settings: Settings) -> AsyncIterator[ControllerServices]:
    """Choose and connect the controller's adapters; the engine is local or Argo by settings."""
    store = await PostgresStore.connect(settings.database.url, min_size=1, max_size=settings.database.pool_max)
    try:
        await store.migrate()
        bus = await NatsBus.from_settings(settings.nats, inbox_prefix=CONTROLLER_INBOX)
        try:
            await bus.ensure_streams(STREAMS)
            async with (
                MinioObjectStore.from_settings(settings.objects) as objects,
                Dispatcher(bus, inbox_prefix=CONTROLLER_INBOX) as dispatcher,
                _engine(settings, bus, dispatcher) as engine,
                _source_host(settings) as source_host,
                _argocd(settings) as argocd,
            ):
                yield ControllerServices(
                    repositories=store,
                    runs=store,
                    executions=store,
                    bus=bus,
                    dispatcher=dispatcher,
                    objects=objects,
                    engine=engine,
                    source_host=source_host,
                    releases=store,
                    registry=OrasRegistry.from_settings(settings.registry),
                    deployments=store,
                    approvals=store,
                    gitops=_gitops(settings),
                    deployer_status=argocd,
                    revisions=Pygit2GitOps.from_settings(settings.gitops) if argocd is not None else None,
                )
        finally:
            await bus.close()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    service_parser(
        "forge-controller", "The Catalyst Forge controller: reconciles runs, releases and deployments."
    ).parse_args(argv)
    configure_logging("forge-controller")
    on_state_change(record_breaker_state)  # circuit breaker transitions in /metrics
    settings = load_settings("forge-controller")

    async def serve(stop: asyncio.Event) -> None:
        async with build(settings) as services:
            # the reconcilers run only while this process holds the Lease (FORGE_CONTROLLER__LEADER_ELECTION)
            await run_as_leader(settings.controller, lambda leading: run_controller(services, settings, leading), stop)

    return run_service(serve)


if __name__ == "__main__":
    sys.exit(main())

"""The controller: its reconcilers and the step event recorder, run side by side until stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from forge.controller.commit_status import CommitStatuses
from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.deployment_health import DeploymentHealth
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.controller.reconcilers.discovery import DiscoveryReconciler
from forge.controller.reconcilers.execution import ExecutionReconciler, TemplateOptions
from forge.controller.reconcilers.pools import PoolConsumers
from forge.controller.reconcilers.release_tags import ReleaseTagger
from forge.controller.step_events import StepEventRecorder
from forge.gitops import GitOpsWriter
from forge.jobs.dispatch import Dispatcher
from forge.observability.runs import observed_runs
from forge.observability.sampler import sample_forever
from forge.observability.workflows import observed_deployments, traced_engine
from forge.ports import (
    ArtifactRegistry,
    ExecutionStore,
    MessageBus,
    ObjectStore,
    RepositoryStore,
    RunStore,
    SourceHost,
    WorkflowEngine,
)
from forge.ports.deployer import DeployerStatus, RevisionHistory
from forge.ports.store import ApprovalStore, DeploymentStore, ReleaseStore
from forge.settings import Settings

__all__ = ["ControllerServices", "run_controller"]


@dataclass(frozen=True, slots=True)
class ControllerServices:
    repositories: RepositoryStore
    runs: RunStore
    executions: ExecutionStore
    bus: MessageBus
    dispatcher: Dispatcher
    objects: ObjectStore
    engine: WorkflowEngine
    source_host: SourceHost | None = None
    releases: ReleaseStore | None = None
    registry: ArtifactRegistry | None = None
    deployments: DeploymentStore | None = None
    approvals: ApprovalStore | None = None
    gitops: GitOpsWriter | None = None
    """The GitOps repository deployments write to; none when ``FORGE_GITOPS__URL`` is unset."""
    deployer_status: DeployerStatus | None = None
    """Argo CD Application health (``FORGE_ARGOCD__ENABLED``); none: active as soon as the pointer is committed."""
    revisions: RevisionHistory | None = None
    """Ancestry on the GitOps branch, to judge the revision Argo CD synced (with ``deployer_status``)."""


async def run_controller(services: ControllerServices, settings: Settings, stop: asyncio.Event) -> None:
    services = _observed(services)
    statuses = CommitStatuses(
        host=services.source_host, context=settings.github.context, public_url=settings.api.public_url
    )
    recorder = StepEventRecorder(executions=services.executions, bus=services.bus, releases=services.releases)
    discovery = DiscoveryReconciler(
        runs=services.runs,
        repositories=services.repositories,
        dispatcher=services.dispatcher,
        objects=services.objects,
        timeout=settings.timeouts.discovery,
        statuses=statuses,
    )
    execution = ExecutionReconciler(
        runs=services.runs,
        repositories=services.repositories,
        executions=services.executions,
        bus=services.bus,
        engine=services.engine,
        recorder=recorder,
        options=TemplateOptions(
            image=settings.engine.image, namespace=settings.engine.namespace, parallelism=settings.engine.parallelism
        ),
        statuses=statuses,
        runs_per_repository=settings.quotas.runs_per_repository,
        claim_lease=settings.controller.claim_lease,
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(sample_forever(services.bus, services.runs, stop, interval=settings.metrics.sample_interval))
        group.create_task(recorder.run(stop))
        group.create_task(ReconcileLoop(discovery).run(stop))
        group.create_task(ReconcileLoop(execution).run(stop))
        group.create_task(PoolConsumers(services.repositories, services.bus, settings.worker).run(stop))
        if services.releases is not None and services.registry is not None:
            group.create_task(ReleaseTagger(services.releases, services.registry).run(stop))
        if services.gitops and services.releases and services.deployments and services.approvals:
            health = None
            if services.deployer_status is not None and services.revisions is not None:
                health = DeploymentHealth(
                    services.deployments,
                    services.deployer_status,
                    services.revisions,
                    timeout=settings.argocd.timeout,
                    poll=settings.argocd.poll,
                )
            deployer = DeploymentReconciler(
                deployments=services.deployments,
                approvals=services.approvals,
                releases=services.releases,
                runs=services.runs,
                writer=services.gitops,
                deploy_timeout=settings.timeouts.deploy,
                claim_lease=settings.controller.claim_lease,
                health=health,
            )
            group.create_task(deployer.run(stop))


def _observed(services: ControllerServices) -> ControllerServices:
    """Run transitions and deployments counted, workflow submits traced (forge.observability)."""
    deployments = observed_deployments(services.deployments) if services.deployments is not None else None
    return replace(
        services, runs=observed_runs(services.runs), engine=traced_engine(services.engine), deployments=deployments
    )

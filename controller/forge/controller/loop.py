"""The controller's reconcilers, run side by side until stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from forge.controller.commit_status import CommitStatuses
from forge.controller.reconcilers.discovery import DiscoveryReconciler
from forge.controller.reconcilers.execution import ExecutionReconciler, TemplateOptions
from forge.ports import MessageBus, ObjectStore, RunStore, SourceHost, WorkflowEngine
from forge.settings import Settings

__all__ = ["ControllerServices", "run_controller"]


@dataclass(frozen=True, slots=True)
class ControllerServices:
    store: RunStore
    bus: MessageBus
    objects: ObjectStore
    engine: WorkflowEngine
    source_host: SourceHost | None = None


async def run_controller(services: ControllerServices, settings: Settings, stop: asyncio.Event) -> None:
    statuses = CommitStatuses(
        host=services.source_host, context=settings.github.context, public_url=settings.api.public_url
    )
    discovery = DiscoveryReconciler(
        store=services.store,
        bus=services.bus,
        objects=services.objects,
        timeout=settings.timeouts.discovery,
        statuses=statuses,
    )
    options = TemplateOptions(
        image=settings.engine.image, namespace=settings.engine.namespace, parallelism=settings.engine.parallelism
    )
    execution = ExecutionReconciler(
        store=services.store, bus=services.bus, engine=services.engine, options=options, statuses=statuses
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(discovery.run(stop))
        group.create_task(execution.run(stop))

"""The controller's reconcilers, run side by side until stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from forge.controller.reconcilers.discovery import DiscoveryReconciler
from forge.ports import MessageBus, ObjectStore, RunStore
from forge.settings import Settings

__all__ = ["ControllerServices", "run_controller"]


@dataclass(frozen=True, slots=True)
class ControllerServices:
    store: RunStore
    bus: MessageBus
    objects: ObjectStore


async def run_controller(services: ControllerServices, settings: Settings, stop: asyncio.Event) -> None:
    discovery = DiscoveryReconciler(
        store=services.store, bus=services.bus, objects=services.objects, timeout=settings.timeouts.discovery
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(discovery.run(stop))

"""Job types a worker process can serve, by name: adding one is a handler module plus one line here.

Each entry builds the type's handler from the adapters one worker process shares
(:class:`WorkerDeps`); ``forge-worker TYPE…`` runs one pull loop per named type on one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from forge.domain.messages import JobType
from forge.jobs.events import StepEventPublisher
from forge.ports import GitMirrors, MessageBus, ObjectStore, SecretProvider
from forge.settings import Settings
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.discovery import DiscoveryHandler
from forge.workflows.workers.runtime import Handler

__all__ = ["HANDLERS", "WorkerDeps"]


@dataclass(frozen=True, slots=True)
class WorkerDeps:
    settings: Settings
    bus: MessageBus
    objects: ObjectStore
    mirrors: GitMirrors
    secrets: SecretProvider


def _discovery(deps: WorkerDeps) -> Handler:
    return DiscoveryHandler(mirrors=deps.mirrors, objects=deps.objects)


def _ci(deps: WorkerDeps) -> Handler:
    return CiHandler(
        mirrors=deps.mirrors,
        objects=deps.objects,
        secrets=deps.secrets,
        settings=deps.settings.ci,
        events=StepEventPublisher(deps.bus),
    )


HANDLERS: Mapping[JobType, Callable[[WorkerDeps], Handler]] = {
    JobType.DISCOVERY: _discovery,
    JobType.CI: _ci,
}

"""Job types a worker process can serve, by name: adding one is a handler module plus one line here.

Each entry builds the type's handler from the adapters one worker process shares
(:class:`WorkerDeps`); ``forge-worker TYPE…`` runs one pull loop per named type on one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from forge.domain.messages import JobType
from forge.jobs.events import StepEventPublisher
from forge.ports import ArtifactRegistry, GitMirrors, MessageBus, ObjectStore, SecretProvider
from forge.settings import Settings
from forge.workflows.workers.artifacts import ArtifactHandler
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.discovery import DiscoveryHandler
from forge.workflows.workers.releases import ReleaseHandler
from forge.workflows.workers.runtime import Handler

__all__ = ["HANDLERS", "WorkerDeps"]


@dataclass(slots=True)
class WorkerDeps:
    settings: Settings
    bus: MessageBus
    objects: ObjectStore
    mirrors: GitMirrors
    secrets: SecretProvider
    registry: ArtifactRegistry
    _ci: CiHandler | None = field(default=None, init=False, repr=False)

    def ci(self) -> CiHandler:
        """The process's one CI step runner: ci and artifact jobs share its tree cache (one per work dir)."""
        if self._ci is None:
            self._ci = CiHandler(
                mirrors=self.mirrors,
                objects=self.objects,
                secrets=self.secrets,
                settings=self.settings.ci,
                events=StepEventPublisher(self.bus),
            )
        return self._ci


def _discovery(deps: WorkerDeps) -> Handler:
    return DiscoveryHandler(mirrors=deps.mirrors, objects=deps.objects)


def _ci(deps: WorkerDeps) -> Handler:
    return deps.ci()


def _artifact(deps: WorkerDeps) -> Handler:
    return ArtifactHandler(
        ci=deps.ci(),
        registry=deps.registry,
        objects=deps.objects,
        bucket=deps.settings.objects.bucket,
    )


def _release(deps: WorkerDeps) -> Handler:
    return ReleaseHandler(
        mirrors=deps.mirrors,
        objects=deps.objects,
        bus=deps.bus,
        registry=deps.registry,
        events=StepEventPublisher(deps.bus),
    )


HANDLERS: Mapping[JobType, Callable[[WorkerDeps], Handler]] = {
    JobType.DISCOVERY: _discovery,
    JobType.CI: _ci,
    JobType.ARTIFACT: _artifact,
    JobType.RELEASE: _release,
}

"""Turn validated configs into the discovery result's projects, steps and phase groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from forge.discovery.checks import ProjectFile
from forge.domain.config import PhaseConfig, duration_seconds
from forge.domain.discovery import DiscoveredArtifact, DiscoveredProject, DiscoveredStep, PhaseGroup

__all__ = ["discovered_project", "phase_groups"]


def discovered_project(project: ProjectFile, phases: Mapping[str, PhaseConfig]) -> DiscoveredProject:
    """Steps in phase order (group, then name); each step's timeout or else its phase's."""
    config = project.loaded.config
    assert config is not None
    ordered = sorted(config.phases.items(), key=lambda item: (phases[item[0]].group, item[0]))
    steps = [
        DiscoveredStep(
            phase=phase,
            name=step.name,
            action=step.action,
            target=step.target,
            args=list(step.args),
            env=dict(step.env),
            secrets=list(step.secrets),
            timeout_seconds=duration_seconds(step.timeout or phases[phase].timeout),
            retries=step.retries,
        )
        for phase, body in ordered
        for step in body.steps
    ]
    return DiscoveredProject(
        name=config.name,
        path=project.directory,
        config_blob=project.blob_id,
        depends_on=sorted(set(config.depends_on)),
        phases={phase: [s.name for s in body.steps] for phase, body in ordered},
        steps=steps,
        artifacts=[DiscoveredArtifact(name=name, type=a.type) for name, a in sorted(config.artifacts.items())],
    )


def phase_groups(phases: Mapping[str, PhaseConfig], used: Iterable[DiscoveredProject]) -> list[PhaseGroup]:
    """Declared phases that at least one of ``used`` (the affected projects) has steps in.

    Groups ascend; phases within a group are sorted by name. A phase no affected project uses
    is left out, so the workflow never holds empty phases.
    """
    names = {phase for project in used for phase in project.phases}
    groups: dict[int, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(phases[name].group, []).append(name)
    return [PhaseGroup(group=group, phases=members) for group, members in sorted(groups.items())]

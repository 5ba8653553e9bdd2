"""In-memory discovery results and template specs for the template builder tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID, uuid5

import pytest

from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.workflows.templates import TemplateSpec

RUN_ID = UUID("11111111-2222-3333-4444-555555555555")
COMMIT = "c0ffee" + "0" * 34
GROUPS = {"check": 1, "build": 1, "test": 2, "package": 3}

# name -> (depends_on, {phase: [(step, timeout_seconds, retries)]})
ProjectDef = tuple[Sequence[str], Mapping[str, Sequence[tuple[str, int, int]]]]
MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]


def discovery(
    projects: Mapping[str, ProjectDef], affected: Sequence[str] | None = None, groups: Mapping[str, int] = GROUPS
) -> DiscoveryResult:
    built = []
    for name in sorted(projects):
        depends_on, phases = projects[name]
        steps = [
            DiscoveredStep(phase=phase, name=step, action="run", target=f"make {step}", timeout_seconds=t, retries=r)
            for phase in sorted(phases, key=lambda p: (groups[p], p))
            for step, t, r in phases[phase]
        ]
        built.append(
            DiscoveredProject(
                name=name,
                path=f"p/{name}",
                config_blob="0" * 40,
                depends_on=sorted(depends_on),
                phases={phase: [s[0] for s in phases[phase]] for phase in phases},
                steps=steps,
            )
        )
    names = sorted(projects) if affected is None else sorted(affected)
    used = {s.phase for p in built if p.name in names for s in p.steps}
    by_group: dict[int, list[str]] = {}
    for phase in sorted(used):
        by_group.setdefault(groups[phase], []).append(phase)
    return DiscoveryResult(
        commit=COMMIT,
        base=None,
        branch="main",
        repository="acme/mono",
        projects=built,
        affected=[AffectedProject(project=n, reasons=["no base: all"]) for n in names],
        phase_groups=[PhaseGroup(group=g, phases=ps) for g, ps in sorted(by_group.items())],
    )


def spec(result: DiscoveryResult, **overrides: Any) -> TemplateSpec:
    step_ids = {
        (s.phase, p.name, s.name): uuid5(RUN_ID, f"{s.phase}/{p.name}/{s.name}")
        for p in result.projects
        for s in p.steps
    }
    fields: dict[str, Any] = {
        "run_id": RUN_ID,
        "repository": "acme/mono",
        "commit_sha": COMMIT,
        "branch": "main",
        "clone_url": "/srv/git/acme-mono.git",
        "discovery": result,
        "step_ids": step_ids,
        **overrides,
    }
    return TemplateSpec(**fields)


@pytest.fixture
def make_discovery() -> MakeDiscovery:
    return discovery


@pytest.fixture
def make_spec() -> MakeSpec:
    return spec

"""The task graph of a run, before it becomes Argo YAML: which task waits for which.

- Only affected projects' steps become tasks, one per ``(phase, project, step)``.
- Phase groups run in sequence; every phase of a group and every project in it run in parallel.
- The steps of one ``(phase, project)`` form a chain in their listed order.
- ``B depends_on A``: the first step of ``(phase, B)`` waits for the last step of ``(phase, A)``
  (hence for all of them). When ``A`` has no steps in that phase, ``B`` waits for ``A``'s own
  dependencies that do, transitively, so a chain of ``depends_on`` keeps its order across a
  project that sits a phase out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from forge.domain.discovery import DiscoveredProject, DiscoveredStep, DiscoveryResult
from forge.errors import InvalidInputError
from forge.workflows.templates.naming import task_names
from forge.workflows.templates.spec import StepKey

__all__ = ["PlannedGroup", "PlannedTask", "has_work", "plan_tasks"]


@dataclass(frozen=True, slots=True)
class PlannedTask:
    name: str
    project: DiscoveredProject
    step: DiscoveredStep
    depends: tuple[str, ...]

    @property
    def key(self) -> StepKey:
        return (self.step.phase, self.project.name, self.step.name)


@dataclass(frozen=True, slots=True)
class PlannedGroup:
    group: int
    tasks: tuple[PlannedTask, ...]


def has_work(discovery: DiscoveryResult) -> bool:
    """Whether any affected project has a step; without one there is no workflow to run."""
    affected = set(discovery.affected_names())
    return any(p.steps for p in discovery.projects if p.name in affected)


def plan_tasks(discovery: DiscoveryResult) -> list[PlannedGroup]:
    """Non-empty groups in ascending order; tasks by phase, project, then step order."""
    affected = set(discovery.affected_names())
    projects = {p.name: p for p in discovery.projects}
    chains: dict[str, dict[str, list[DiscoveredStep]]] = {}
    for project in discovery.projects:
        if project.name in affected:
            for step in project.steps:
                chains.setdefault(step.phase, {}).setdefault(project.name, []).append(step)
    group_of = {phase: g.group for g in discovery.phase_groups for phase in g.phases}
    if unknown := sorted(set(chains) - set(group_of)):
        raise InvalidInputError(f"phases without a phase group: {', '.join(unknown)}")
    names = task_names(
        (phase, p, s.name) for phase, by_project in chains.items() for p, ss in by_project.items() for s in ss
    )
    planned: list[PlannedGroup] = []
    for group in sorted(discovery.phase_groups, key=lambda g: g.group):
        tasks: list[PlannedTask] = []
        for phase in sorted(set(group.phases) & set(chains)):
            tasks.extend(_phase_tasks(phase, chains[phase], projects, names))
        if tasks:
            planned.append(PlannedGroup(group.group, tuple(tasks)))
    return planned


def _phase_tasks(
    phase: str,
    chains: Mapping[str, list[DiscoveredStep]],
    projects: Mapping[str, DiscoveredProject],
    names: Mapping[StepKey, str],
) -> list[PlannedTask]:
    upstream = {name: _upstream(name, chains, projects) for name in sorted(chains)}
    _check_acyclic(upstream)
    tasks: list[PlannedTask] = []
    for project_name, before in upstream.items():
        previous = tuple(names[(phase, u, chains[u][-1].name)] for u in before)
        for step in chains[project_name]:
            name = names[(phase, project_name, step.name)]
            tasks.append(PlannedTask(name, projects[project_name], step, previous))
            previous = (name,)
    return tasks


def _upstream(
    project: str, chains: Mapping[str, list[DiscoveredStep]], projects: Mapping[str, DiscoveredProject]
) -> list[str]:
    """The nearest projects ``project`` depends on (transitively) that have steps in this phase."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(projects[project].depends_on)
    while stack:
        name = stack.pop()
        if name in seen or name not in projects:
            continue
        seen.add(name)
        if name in chains:
            found.add(name)
        else:
            stack.extend(projects[name].depends_on)
    return sorted(found)


def _check_acyclic(upstream: Mapping[str, list[str]]) -> None:
    done: set[str] = set()
    while len(done) < len(upstream):
        ready = [n for n, before in upstream.items() if n not in done and done.issuperset(before)]
        if not ready:
            cycle = sorted(n for n in upstream if n not in done)
            raise InvalidInputError(f"depends_on cycle among projects: {', '.join(cycle)}")
        done.update(ready)

"""The executions a discovery asks for: one phase per used phase, one task per (phase, affected
project), one step per step in its declared order. Both store adapters persist exactly this plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forge.domain.discovery import DiscoveryResult
from forge.errors import InvalidInputError

__all__ = ["ExecutionPlan", "PlannedStep", "plan_executions"]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    phase: str
    project: str
    name: str
    action: str
    target: str
    position: int


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    phases: dict[str, int] = field(default_factory=dict)  # phase -> group, in first-use order
    tasks: list[tuple[str, str, str]] = field(default_factory=list)  # (phase, project, project path)
    steps: list[PlannedStep] = field(default_factory=list)


def plan_executions(discovery: DiscoveryResult) -> ExecutionPlan:
    """The plan of ``discovery``'s affected projects; ``InvalidInputError`` for a discovery that
    names a project it did not discover, uses a phase in no group, or repeats a step name."""
    groups = {phase: group.group for group in discovery.phase_groups for phase in group.phases}
    projects = {project.name: project for project in discovery.projects}
    plan = ExecutionPlan()
    for name in discovery.affected_names():
        project = projects.get(name)
        if project is None:
            raise InvalidInputError(
                f"discovery: affected project {name!r} is not among the discovered projects",
                details={"project": name},
            )
        positions: dict[str, int] = {}
        seen: set[tuple[str, str]] = set()
        for step in project.steps:
            if step.phase not in groups:
                raise InvalidInputError(
                    f"discovery: phase {step.phase!r} of project {name!r} is in no phase group",
                    details={"project": name, "phase": step.phase},
                )
            if (step.phase, step.name) in seen:
                raise InvalidInputError(
                    f"discovery: project {name!r} has two steps named {step.name!r} in phase {step.phase!r}",
                    details={"project": name, "phase": step.phase, "step": step.name},
                )
            seen.add((step.phase, step.name))
            if step.phase not in positions:
                positions[step.phase] = 0
                plan.phases[step.phase] = groups[step.phase]
                plan.tasks.append((step.phase, name, project.path))
            plan.steps.append(PlannedStep(step.phase, name, step.name, step.action, step.target, positions[step.phase]))
            positions[step.phase] += 1
    return plan

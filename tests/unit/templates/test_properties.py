"""Random project graphs: the template is always strictly valid and respects every ordering rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge.domain.discovery import DiscoveryResult
from forge.workflows.templates import TemplateSpec, build_template, has_work, plan_tasks, violations

MakeDiscovery = Callable[..., DiscoveryResult]
MakeSpec = Callable[..., TemplateSpec]
_PHASES = ["build", "check", "package", "test"]


@st.composite
def _graphs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    count = draw(st.integers(1, 8))
    projects: dict[str, Any] = {}
    for i in range(count):
        name = f"p{i}"
        depends = draw(st.lists(st.sampled_from([f"p{j}" for j in range(i)]), unique=True)) if i else []
        phases = draw(st.lists(st.sampled_from(_PHASES), unique=True, max_size=3))
        projects[name] = (
            depends,
            {
                phase: [(f"s{k}", draw(st.sampled_from([60, 600])), draw(st.integers(0, 2))) for k in range(n)]
                for phase in phases
                if (n := draw(st.integers(1, 3)))
            },
        )
    affected = draw(st.lists(st.sampled_from(sorted(projects)), unique=True, min_size=1))
    return projects, affected


def _ancestors(tasks: dict[str, set[str]]) -> dict[str, set[str]]:
    done: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in done:
            done[name] = set()
            for dep in tasks[name]:
                done[name] |= {dep, *visit(dep)}
        return done[name]

    for name in tasks:
        visit(name)
    return done


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=_graphs())
def test_random_graphs(
    graph: tuple[dict[str, Any], list[str]], make_discovery: MakeDiscovery, make_spec: MakeSpec
) -> None:
    projects, affected = graph
    result = make_discovery(projects, affected=affected)
    if not has_work(result):
        assert plan_tasks(result) == []
        return
    doc = build_template(make_spec(result))
    assert violations(doc) == []
    groups = plan_tasks(result)
    assert [g.group for g in groups] == sorted({g.group for g in groups})
    order: dict[str, set[str]] = {}
    where: dict[tuple[str, str, str], str] = {}
    for group in groups:
        for task in group.tasks:
            order[task.name] = set(task.depends)
            where[task.key] = task.name
    assert {p.name for p in result.projects if p.name in affected and p.steps} == {k[1] for k in where}
    before = _ancestors(order)
    for project in result.projects:
        if project.name not in affected:
            continue
        for phase, steps in project.phases.items():
            chain = [where[(phase, project.name, s)] for s in steps]
            assert all(chain[i] in before[chain[i + 1]] for i in range(len(chain) - 1))
            # every affected dependency (transitively) with steps in this phase finishes first
            pending, seen = list(project.depends_on), set()
            while pending:
                dep = pending.pop()
                if dep in seen:
                    continue
                seen.add(dep)
                pending.extend(next(p for p in result.projects if p.name == dep).depends_on)
                dep_tasks = [n for (ph, pr, _), n in where.items() if ph == phase and pr == dep]
                assert all(n in before[chain[0]] for n in dep_tasks)

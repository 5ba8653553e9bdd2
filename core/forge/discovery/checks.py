"""Checks across project files: nesting, unique names, known dependencies, no cycles, known phases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from forge.discovery.load import Loaded
from forge.domain.config import ProjectConfig
from forge.errors import ConfigIssue

__all__ = ["ProjectFile", "check_nesting", "check_projects"]


@dataclass(frozen=True, slots=True)
class ProjectFile:
    """A loaded ``<directory>/.forge/project.yaml``."""

    path: str
    directory: str
    blob_id: str
    loaded: Loaded[ProjectConfig]


def check_nesting(files: Sequence[tuple[str, str]]) -> list[ConfigIssue]:
    """``(directory, file path)`` pairs: a project directory inside another one is an error."""
    owners = dict(files)
    issues: list[ConfigIssue] = []
    for directory, path in files:
        for parent in _ancestors(directory):
            if parent in owners:
                outer = owners[parent]
                reason = f"nested projects are not allowed: {directory} is inside the project at {outer}"
                issues.append(ConfigIssue(path, None, "", reason))
                break
    return issues


def _ancestors(directory: str) -> Iterable[str]:
    if directory == ".":
        return
    parts = directory.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        yield "/".join(parts[:cut])
    yield "."


def check_projects(projects: Sequence[ProjectFile], phases: Mapping[str, object] | None) -> list[ConfigIssue]:
    """Cross-project issues; ``phases`` is None when repo.yaml is invalid.

    Duplicate names are found among every file with a string ``name``; dependencies, phases and
    cycles are checked for the files that validated (an invalid file's issues come first).
    """
    valid = [(p, p.loaded.config) for p in projects if p.loaded.config is not None]
    known = {p.loaded.raw_name for p in projects if p.loaded.raw_name is not None}
    issues: list[ConfigIssue] = []
    by_name: dict[str, list[ProjectFile]] = {}
    for project in projects:  # invalid files too: their name is usually fine
        if project.loaded.raw_name is not None:
            by_name.setdefault(project.loaded.raw_name, []).append(project)
    for name, holders in by_name.items():
        for holder in holders if len(holders) > 1 else ():
            others = ", ".join(o.path for o in holders if o is not holder)
            reason = f"duplicate project name {name!r} (also in {others})"
            issues.append(ConfigIssue(holder.path, holder.loaded.line("name"), "name", reason))
    for project, config in valid:
        for index, dependency in enumerate(config.depends_on):
            if dependency not in known:
                line = project.loaded.line(f"depends_on.{index}")
                reason = f"unknown project {dependency!r}"
                issues.append(ConfigIssue(project.path, line, f"depends_on.{index}", reason))
        if phases is not None:
            issues.extend(_unknown_phases(project, config, phases))
    issues.extend(_cycles({config.name: p for p, config in valid}))
    return issues


def _unknown_phases(project: ProjectFile, config: ProjectConfig, phases: Mapping[str, object]) -> list[ConfigIssue]:
    declared = ", ".join(sorted(phases))
    return [
        ConfigIssue(
            project.path,
            project.loaded.line(f"phases.{phase}"),
            f"phases.{phase}",
            f"unknown phase {phase!r}; .forge/repo.yaml declares: {declared}",
        )
        for phase in config.phases
        if phase not in phases
    ]


def _cycles(projects: Mapping[str, ProjectFile]) -> list[ConfigIssue]:
    """One issue per dependency cycle, reported at the smallest name of the cycle."""
    graph = {
        name: sorted({d for d in p.loaded.config.depends_on if d in projects}) if p.loaded.config else []
        for name, p in projects.items()
    }
    issues: list[ConfigIssue] = []
    for component in _strongly_connected(graph):
        start = min(component)
        if len(component) == 1 and start not in graph[start]:
            continue
        cycle = _cycle_from(start, graph, set(component))
        project = projects[start]
        config = project.loaded.config
        assert config is not None
        index = config.depends_on.index(cycle[1])
        reason = "dependency cycle: " + " -> ".join(cycle)
        issues.append(
            ConfigIssue(project.path, project.loaded.line(f"depends_on.{index}"), f"depends_on.{index}", reason)
        )
    return issues


def _cycle_from(start: str, graph: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected component (BFS, shortest)."""
    previous: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for nxt in graph[node]:
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if nxt in members and nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError("a strongly connected component always holds a cycle")


def _strongly_connected(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in a deterministic order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = graph[node]
            if child < len(successors):
                work.append((node, child + 1))
                nxt = successors[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components

"""Which projects a change affects, and why.

Reasons (each project's list is ``sorted`` and unique, so the output is deterministic):

- ``no base: all`` — there is no base to compare with: every project, no other reason.
- ``changed: <path>`` — a changed path lies inside the project directory. At most
  ``MAX_LISTED`` paths are named (the smallest), then ``changed: … and N more``.
- ``paths: <glob>`` — one of the project's extra ``paths`` globs matches a changed path.
- ``affects_all: <path>`` — a changed path matches a ``repo.yaml`` ``affects_all`` glob; every
  project gets it (capped like ``changed``).
- ``depends_on: <project>`` — a direct dependency is affected (for any of these reasons), which
  makes the relation transitive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from forge.discovery.globs import glob_regex
from forge.domain.discovery import AffectedProject

__all__ = ["MAX_LISTED", "NO_BASE", "ProjectScope", "affected_projects"]

MAX_LISTED = 5
NO_BASE = "no base: all"


@dataclass(frozen=True, slots=True)
class ProjectScope:
    name: str
    directory: str
    globs: Sequence[str] = ()
    depends_on: Sequence[str] = field(default_factory=tuple)


def affected_projects(
    projects: Sequence[ProjectScope], changed: Sequence[str] | None, affects_all: Sequence[str] = ()
) -> list[AffectedProject]:
    """Affected projects sorted by name; ``changed`` is None when there is no base commit."""
    if changed is None:
        return [AffectedProject(project=p.name, reasons=[NO_BASE]) for p in sorted(projects, key=lambda p: p.name)]
    reasons: dict[str, set[str]] = {}
    for name, paths in _owned(projects, changed).items():
        reasons.setdefault(name, set()).update(_capped("changed", paths))
    everywhere = _capped("affects_all", _matching(affects_all, changed))
    for project in projects:
        mine = reasons.setdefault(project.name, set())
        mine.update(everywhere)
        mine.update(f"paths: {glob}" for glob in project.globs if _matching([glob], changed))
    dependents: dict[str, set[str]] = {}
    for project in projects:
        for dependency in project.depends_on:
            dependents.setdefault(dependency, set()).add(project.name)
    queue = sorted(name for name, why in reasons.items() if why)
    seen = set(queue)
    for name in queue:
        for dependent in sorted(dependents.get(name, ())):
            reasons[dependent].add(f"depends_on: {name}")
            if dependent not in seen:
                seen.add(dependent)
                queue.append(dependent)
    return [AffectedProject(project=name, reasons=sorted(why)) for name, why in sorted(reasons.items()) if why]


def _owned(projects: Sequence[ProjectScope], changed: Sequence[str]) -> dict[str, list[str]]:
    """Changed paths per project whose directory holds them (the deepest one; nesting is an error)."""
    by_directory = {p.directory: p.name for p in projects}
    owned: dict[str, list[str]] = {}
    for path in changed:
        owner = _owner(path, by_directory)
        if owner is not None:
            owned.setdefault(owner, []).append(path)
    return owned


def _owner(path: str, by_directory: dict[str, str]) -> str | None:
    cut = len(path)
    while cut > 0:
        cut = path.rfind("/", 0, cut)
        if cut <= 0:
            break
        owner = by_directory.get(path[:cut])
        if owner is not None:
            return owner
    return by_directory.get(".")


def _matching(globs: Iterable[str], changed: Sequence[str]) -> list[str]:
    regexes = [glob_regex(g) for g in globs]
    if not regexes:
        return []
    return [path for path in changed if any(r.fullmatch(path) for r in regexes)]


def _capped(kind: str, paths: Sequence[str]) -> list[str]:
    ordered = sorted(set(paths))
    listed = [f"{kind}: {p}" for p in ordered[:MAX_LISTED]]
    if len(ordered) > MAX_LISTED:
        listed.append(f"{kind}: … and {len(ordered) - MAX_LISTED} more")
    return listed

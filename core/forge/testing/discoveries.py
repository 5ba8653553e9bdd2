"""A discovery result the controller's tests share: ``lib`` (check/lint, test/unit) and ``app``
depending on it (build/bundle, test/unit); phase group 1 holds ``check`` and ``build``, 2 ``test``."""

from __future__ import annotations

from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup

__all__ = ["LIB_AND_APP_STEPS", "lib_and_app"]

#: ``phase/project/step`` of every step of :func:`lib_and_app`.
LIB_AND_APP_STEPS = ["check/lib/lint", "build/app/bundle", "test/lib/unit", "test/app/unit"]


def _step(phase: str, name: str) -> DiscoveredStep:
    return DiscoveredStep(phase=phase, name=name, action="run", target=f"make {name}", timeout_seconds=300)


def lib_and_app(commit: str, repository: str, *, affected: bool = True) -> DiscoveryResult:
    """Both projects affected (``no base: all``), or none."""
    lib = DiscoveredProject(
        name="lib",
        path="lib",
        config_blob="1" * 40,
        phases={"check": ["lint"], "test": ["unit"]},
        steps=[_step("check", "lint"), _step("test", "unit")],
    )
    app = DiscoveredProject(
        name="app",
        path="app",
        config_blob="2" * 40,
        depends_on=["lib"],
        phases={"build": ["bundle"], "test": ["unit"]},
        steps=[_step("build", "bundle"), _step("test", "unit")],
    )
    reasons = [AffectedProject(project=name, reasons=["no base: all"]) for name in ("app", "lib")]
    return DiscoveryResult(
        commit=commit,
        base=None,
        branch="main",
        repository=repository,
        projects=[app, lib],
        affected=reasons if affected else [],
        phase_groups=[PhaseGroup(group=1, phases=["build", "check"]), PhaseGroup(group=2, phases=["test"])],
    )

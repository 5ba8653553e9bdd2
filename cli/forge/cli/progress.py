"""Live view of a run for ``forge run``: the DAG as phases → projects → steps, redrawn as it moves.

The view is fed by the run's event stream (``GET /v1/runs/{id}/events``): a ``RunView`` starts from the
snapshot and applies each change (the changed fields of the run, a phase, task or step; a phase, task
or step it has not seen yet is added under its parent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

__all__ = ["RunView", "follow_run", "render_run"]

_STYLE = {
    "pending": ("·", "dim"),
    "running": ("▶", "yellow"),
    "success": ("✔", "green"),
    "failed": ("✘", "red"),
    "cancelled": ("■", "magenta"),
    "skipped": ("-", "dim"),
}


def _label(name: str, status: str, extra: str = "") -> Text:
    icon, style = _STYLE.get(status, ("?", ""))
    return Text.from_markup(f"[{style}]{icon} {escape(name)}[/] [dim]{status}{escape(extra)}[/]")


def render_run(run: dict[str, Any], executions: dict[str, Any]) -> RenderableType:
    root = Tree(_label(f"run {run['id']}", run["status"]))
    for phase in sorted(executions.get("phases", []), key=lambda p: (p["group"], p["name"])):
        branch = root.add(_label(f"{phase['name']} (group {phase['group']})", phase["status"]))
        for task in sorted(phase["tasks"], key=lambda t: t["project"]):
            node = branch.add(_label(task["project"], task["status"]))
            for step in task["steps"]:
                extra = ""
                if step.get("exit_code") is not None:
                    extra += f", exit {step['exit_code']}"
                if (step.get("attempts") or 0) > 1:
                    extra += f", attempt {step['attempts']}"
                node.add(_label(step["name"], step["status"], extra))
    return Group(root)


class RunView:
    """A run and its executions as ``GET /v1/runs/{id}`` and ``.../executions`` show them, kept current by
    the changes of the run's event stream."""

    def __init__(self, run: dict[str, Any], executions: dict[str, Any]) -> None:
        self.run = run
        self.executions = executions
        self._nodes: dict[str, dict[str, Any]] = {}
        for phase in executions.setdefault("phases", []):
            self._nodes[phase["id"]] = phase
            for task in phase.setdefault("tasks", []):
                self._nodes[task["id"]] = task
                for step in task.setdefault("steps", []):
                    self._nodes[step["id"]] = step

    @property
    def status(self) -> str:
        return str(self.run["status"])

    def apply(self, change: dict[str, Any]) -> None:
        """Apply one ``change`` event's data (``{kind, entity_id, body, ...}``)."""
        kind, entity, body = change["kind"], change["entity_id"], change["body"]
        if kind == "run":
            self.run.update(body)
            return
        node = self._nodes.get(entity)
        if node is not None:
            node.update(body)
            return
        if kind == "phase":
            node = {"id": entity, "run_id": change["run_id"], **body, "tasks": []}
            self.executions["phases"].append(node)
        else:
            parent = self._nodes.get(body.get("phase_id" if kind == "task" else "task_id", ""))
            if parent is None:
                return  # a change of something planned before the snapshot we never saw: cannot be
            node = {"id": entity, **body, **({"steps": []} if kind == "task" else {})}
            parent["tasks" if kind == "task" else "steps"].append(node)
        self._nodes[entity] = node


def follow_run(
    updates: Iterable[tuple[dict[str, Any], dict[str, Any]]], *, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Redraw on every (run, executions) of ``updates`` until they end; the last run and executions."""
    shown = iter(updates)
    run, executions = next(shown)
    with Live(render_run(run, executions), console=console, refresh_per_second=8, transient=False) as live:
        for run, executions in shown:
            live.update(render_run(run, executions))
    console.line()
    return run, executions

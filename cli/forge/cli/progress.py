"""Live view of a run for ``forge run``: the DAG as phases → projects → steps, redrawn as it moves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

__all__ = ["follow_run", "render_run"]

_STYLE = {
    "pending": ("·", "dim"),
    "running": ("▶", "yellow"),
    "success": ("✔", "green"),
    "failed": ("✘", "red"),
    "cancelled": ("■", "magenta"),
    "skipped": ("-", "dim"),
}
_FINAL = {"success", "failed", "cancelled"}


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


def follow_run(
    fetch: Callable[[], tuple[dict[str, Any], dict[str, Any]]], *, timeout: float, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Redraw until the run is final (or ``timeout``); the last run and executions."""
    deadline = time.monotonic() + timeout
    run, executions = fetch()
    with Live(render_run(run, executions), console=console, refresh_per_second=8, transient=False) as live:
        while run["status"] not in _FINAL and time.monotonic() < deadline:
            time.sleep(0.25)
            run, executions = fetch()
            live.update(render_run(run, executions))
    console.line()
    return run, executions

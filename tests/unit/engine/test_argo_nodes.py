"""Mapping Argo's node tree of a nested-DAG workflow (the builder's per-group templates)."""

from __future__ import annotations

from typing import Any

from forge.adapters.argo_workflows import workflow_status
from forge.ports import NodePhase, WorkflowPhase


def _node(node_id: str, display: str, kind: str, phase: str, boundary: str | None, children: list[str]) -> Any:
    node: dict[str, Any] = {
        "id": node_id,
        "name": f"wf.{display}",
        "displayName": display,
        "type": kind,
        "phase": phase,
        "children": children,
    }
    if boundary is not None:
        node["boundaryID"] = boundary
    return node


def test_tasks_of_nested_dags_are_reported_by_display_name() -> None:
    nodes = {
        "wf": _node("wf", "wf", "DAG", "Failed", None, ["g1"]),
        "g1": _node("g1", "group-1", "DAG", "Failed", "wf", ["r1", "p2"]),
        "r1": _node("r1", "check-lib-lint", "Retry", "Failed", "g1", ["p1a", "p1b"]),
        "p1a": _node("p1a", "check-lib-lint(0)", "Pod", "Failed", "g1", []),
        "p1b": _node("p1b", "check-lib-lint(1)", "Pod", "Failed", "g1", []),
        "p2": _node("p2", "build-app-bundle", "Pod", "Succeeded", "g1", []),
        "g2": _node("g2", "group-2", "DAG", "Omitted", "wf", []),
    }
    status = workflow_status({"metadata": {"name": "wf"}, "status": {"phase": "Failed", "nodes": nodes}})
    assert status.phase is WorkflowPhase.FAILED
    assert set(status.nodes) == {"group-1", "group-2", "check-lib-lint", "build-app-bundle"}
    assert status.nodes["check-lib-lint"].attempts == 2
    assert status.nodes["check-lib-lint"].phase is NodePhase.FAILED
    assert status.nodes["build-app-bundle"].attempts == 1
    assert status.nodes["group-2"].phase is NodePhase.OMITTED

"""The nodes of one local workflow, keyed as the controller reads them.

Every DAG task gets a node, whether it runs a container (a leaf) or a nested dag template (a DAG
node, phase from Argo's ``assessDAGPhase`` of its own tasks). A node is keyed by its task name;
Argo names it ``<workflow>.<parent task>.<task>``, so when a task name occurs more than once in
the tree (the same dag template called twice, or two nested DAGs with a task of the same name)
every occurrence is keyed by its dotted path from the entrypoint instead (``group-1.lint``): the
Argo node name without the workflow prefix. The template builder guarantees unique task names,
so its steps always appear under their plain names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from forge.ports.engine import NodePhase, NodeStatus
from forge.workflows.engine.plans import DagPlan

__all__ = ["FULFILLED", "Node", "node_keys", "now"]

FULFILLED = {NodePhase.SUCCEEDED, NodePhase.FAILED, NodePhase.ERROR, NodePhase.SKIPPED, NodePhase.OMITTED}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Node:
    name: str
    phase: NodePhase = NodePhase.PENDING
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0  # container attempts; always 0 for a DAG node
    outputs: dict[str, str] = field(default_factory=dict)

    def end(self, phase: NodePhase, message: str | None) -> None:
        self.phase, self.message, self.finished_at = phase, message, now()

    def end_unfinished(self, message: str | None) -> None:
        """Skipped if it never started, Failed if it was running."""
        if self.phase not in FULFILLED:
            self.end(NodePhase.SKIPPED if self.started_at is None else NodePhase.FAILED, message)

    def status(self) -> NodeStatus:
        s = self
        return NodeStatus(s.name, s.phase, s.message, s.started_at, s.finished_at, s.attempts, dict(s.outputs))


def _paths(dag: DagPlan, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for name, task in dag.tasks.items():
        yield (*prefix, name)
        if task.dag is not None:
            yield from _paths(task.dag, (*prefix, name))


def node_keys(root: DagPlan) -> dict[tuple[str, ...], str]:
    """Every task path of the tree (entrypoint task names first, depth first) → its node key."""
    paths = list(_paths(root, ()))
    counts = Counter(p[-1] for p in paths)
    return {p: p[-1] if counts[p[-1]] == 1 else ".".join(p) for p in paths}

"""WorkflowEngine: Argo Server in clusters, the local engine on one machine (DESIGN §1).

Both speak Argo's vocabulary: a WorkflowTemplate (a plain dict, exactly what Argo accepts) is
created, a Workflow is submitted from it, and its node phases are reported as Argo reports them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["NodePhase", "NodeStatus", "WorkflowEngine", "WorkflowPhase", "WorkflowStatus"]


class WorkflowPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"

    @property
    def is_final(self) -> bool:
        return self in {WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.ERROR}


class NodePhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One DAG task (Argo node of type Pod/Retry) by its task name."""

    name: str
    phase: NodePhase
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    name: str
    phase: WorkflowPhase
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    nodes: Mapping[str, NodeStatus] = field(default_factory=dict)


class WorkflowEngine(Protocol):
    async def create_template(self, template: Mapping[str, Any]) -> str:
        """Create the WorkflowTemplate (idempotent for an identical template); its name."""

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        """Submit a Workflow from the template; the workflow's name."""

    async def status(self, workflow_name: str) -> WorkflowStatus:
        """Current status; ``NotFoundError`` for an unknown workflow."""

    def watch(self, workflow_name: str) -> AsyncIterator[WorkflowStatus]:
        """Yield the status whenever it changes, ending after a final phase."""

    async def stop(self, workflow_name: str, *, message: str) -> None:
        """Start no new tasks and stop running ones (Argo ``terminate``); the workflow fails."""

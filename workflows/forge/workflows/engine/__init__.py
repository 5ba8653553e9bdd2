"""Workflow engines: Argo Server over REST for clusters, the local engine for one machine (DESIGN §1)."""

from forge.workflows.engine.argo import ArgoWorkflowEngine
from forge.workflows.engine.containers import StepRunner
from forge.workflows.engine.durations import parse_duration
from forge.workflows.engine.local import LocalWorkflowEngine

__all__ = ["ArgoWorkflowEngine", "LocalWorkflowEngine", "StepRunner", "parse_duration"]

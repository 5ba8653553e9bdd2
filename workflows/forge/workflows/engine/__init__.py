"""The local workflow engine for one machine (DESIGN §1); Argo Server's is ``forge.adapters.argo_workflows``."""

from forge.workflows.engine.containers import StepRunner
from forge.workflows.engine.durations import parse_duration
from forge.workflows.engine.local import LocalWorkflowEngine

__all__ = ["LocalWorkflowEngine", "StepRunner", "parse_duration"]

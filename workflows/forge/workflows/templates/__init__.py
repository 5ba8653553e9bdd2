"""Hera builders: the Argo WorkflowTemplate of a run, and its strict validation (DESIGN §1, §9).

``build_template(TemplateSpec(...))`` is a pure function returning the template as a dict;
``has_work(discovery)`` says whether a run needs one at all (a run whose affected projects have
no steps succeeds without a workflow); ``validate_workflow_template(doc)`` raises
``InvalidInputError`` naming every unknown field or wrong type; ``to_yaml(doc)`` renders it.
"""

from __future__ import annotations

from forge.workflows.templates.build import (
    DEADLINE_GRACE_SECONDS,
    STEP_COMMAND,
    build_template,
    step_template_name,
    workflow_name,
)
from forge.workflows.templates.naming import MAX_TASK_NAME, label_value, task_names
from forge.workflows.templates.payload import ci_key, ci_payload
from forge.workflows.templates.plan import PlannedGroup, PlannedTask, has_work, plan_tasks
from forge.workflows.templates.render import to_yaml
from forge.workflows.templates.spec import DEFAULT_IMAGE, LABEL_PREFIX, StepKey, TemplateSpec
from forge.workflows.templates.validate import strict_schema, validate_workflow_template, violations

__all__ = [
    "DEADLINE_GRACE_SECONDS",
    "DEFAULT_IMAGE",
    "LABEL_PREFIX",
    "MAX_TASK_NAME",
    "STEP_COMMAND",
    "PlannedGroup",
    "PlannedTask",
    "StepKey",
    "TemplateSpec",
    "build_template",
    "ci_key",
    "ci_payload",
    "has_work",
    "label_value",
    "plan_tasks",
    "step_template_name",
    "strict_schema",
    "task_names",
    "to_yaml",
    "validate_workflow_template",
    "violations",
    "workflow_name",
]

"""What the local engine runs: a WorkflowTemplate dict checked and turned into a plan.

The supported subset of Argo (anything else is rejected with an ``InvalidInputError`` naming the
template, task and field, never silently ignored when it would change what runs):

- ``spec.entrypoint`` naming a ``dag`` template whose tasks each call a ``container`` or a
  ``dag`` template (nested DAGs, any depth; a template that calls itself, directly or through
  others, is rejected: without ``when`` the recursion could never end);
- DAG ``tasks[].{name, template, dependencies | depends, arguments.parameters, continueOn}``,
  ``dag.failFast`` (default true) and template-level ``parallelism``;
- ``inputs.parameters`` (``value``/``default``) of container and dag templates, filled from the
  calling task's ``arguments.parameters``;
- ``spec.{arguments.parameters, activeDeadlineSeconds, parallelism}``;
- container templates: ``container.{command, args, env[].value, workingDir}`` (image, resources
  and other pod settings are accepted and ignored), ``retryStrategy.{limit, retryPolicy,
  backoff.{duration, factor, maxDuration, cap}}`` and ``activeDeadlineSeconds``. ``env[].valueFrom``
  is accepted only for ``forge-step`` containers and dropped: the in-process step runner is bound
  to this engine's bus, and a ``forge-step`` subprocess inherits this process's environment
  (where the embedded mode's ``FORGE_NATS__URL`` lives) in place of the cluster's ConfigMap.

Every tag is checked at submit with a dry run (``retries`` = 0) through every nested DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase
from forge.workflows.engine import expressions as ex
from forge.workflows.engine.durations import parse_duration
from forge.workflows.engine.plans import Attempt, DagPlan, Retry, TaskPlan, WorkflowPlan

__all__ = ["Attempt", "DagPlan", "Retry", "TaskPlan", "WorkflowPlan", "check_template", "plan_workflow"]

_OTHER_KINDS = ("steps", "script", "resource", "suspend", "http", "containerSet", "data", "plugin")
_TASK_KEYS = {"name", "template", "dependencies", "depends", "arguments", "continueOn"}
_STEP_COMMAND = "forge-step"


def check_template(template: Mapping[str, Any]) -> str:
    """Validate what can be checked without parameters; the template's name."""
    name = (template.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("WorkflowTemplate: metadata.name is required")
    _root(template, name)
    return name


def plan_workflow(template: Mapping[str, Any], parameters: Mapping[str, str], scope: Mapping[str, str]) -> WorkflowPlan:
    """The plan for one submission; every tag is checked with a dry run (``retries`` = 0)."""
    name = check_template(template)
    spec = template["spec"]
    root = _root(template, name)
    values: dict[str, str] = {}
    for p in (spec.get("arguments") or {}).get("parameters") or []:
        if p["name"] in parameters:
            values[p["name"]] = parameters[p["name"]]
        elif p.get("value") is not None:
            values[p["name"]] = str(p["value"])
        else:
            raise InvalidInputError(
                f"WorkflowTemplate '{name}': spec.arguments.parameters.{p['name']}.value is required"
            )
    values.update({k: v for k, v in parameters.items() if k not in values})
    dry = dict(scope) | {f"workflow.parameters.{k}": v for k, v in values.items()}
    _dry_run(root, dry, dry)
    deadline = spec.get("activeDeadlineSeconds")
    parallelism = spec.get("parallelism")
    return WorkflowPlan(
        root=root,
        parameters=values,
        deadline=None if deadline is None else parse_duration(deadline, field="spec.activeDeadlineSeconds"),
        parallelism=None if parallelism is None else int(parallelism),
    )


def _dry_run(dag: DagPlan, scope: Mapping[str, str], global_scope: Mapping[str, str]) -> None:
    """Render every task of ``dag`` (and of the DAGs it runs) with placeholder task outputs."""
    local = dict(scope)
    for t in dag.tasks.values():
        if t.dag is None:
            local |= {f"tasks.{t.name}.outputs.result": "", f"tasks.{t.name}.exitCode": "0"}
    for t in dag.tasks.values():
        if t.dag is None:
            t.render(local, 0)
        else:
            _dry_run(t.dag, {**global_scope, **t.inputs(local, None)}, global_scope)


def _root(template: Mapping[str, Any], name: str) -> DagPlan:
    where = f"WorkflowTemplate '{name}'"
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{where}: spec is required")
    if spec.get("onExit"):
        raise InvalidInputError(f"{where}: spec.onExit is not supported by the local engine")
    templates = _templates(spec, where)
    entry = templates.get(spec.get("entrypoint") or "")
    if entry is None or "dag" not in entry:
        raise InvalidInputError(f"{where}: spec.entrypoint {spec.get('entrypoint')!r} must name a dag template")
    return _dag(entry, templates, where, {}, ())


def _dag(
    template: Mapping[str, Any],
    templates: Mapping[str, Mapping[str, Any]],
    where: str,
    planned: dict[str, DagPlan],
    stack: tuple[str, ...],
) -> DagPlan:
    """The plan of one dag template (once per template); ``stack`` is the chain of callers."""
    tname = template["name"]
    if tname in stack:
        raise InvalidInputError(f"{where}: template recursion {' -> '.join([*stack, tname])}")
    if tname in planned:
        return planned[tname]
    dag = template["dag"]
    if dag.get("target"):
        raise InvalidInputError(f"{where}: dag.target is not supported by the local engine")
    plans: dict[str, TaskPlan] = {}
    for task in dag.get("tasks") or []:
        plan = _task(task, templates, f"{where}: dag '{tname}'")
        if plan.name in plans:
            raise InvalidInputError(f"{where}: dag '{tname}': duplicate task name '{plan.name}'")
        if "dag" in plan.template:
            child = _dag(plan.template, templates, where, planned, (*stack, tname))
            plan = TaskPlan(
                plan.name, plan.template, plan.arguments, plan.depends, plan.dependencies, plan.continue_on, child
            )
        plans[plan.name] = plan
    if not plans:
        raise InvalidInputError(f"{where}: dag '{tname}' has no tasks")
    for plan in plans.values():
        for dep in plan.dependencies:
            if dep not in plans:
                raise InvalidInputError(f"{where}: task '{plan.name}' depends on unknown task '{dep}'")
    _check_acyclic(plans, where)
    depended = {d for t in plans.values() for d in t.dependencies}
    parallelism = template.get("parallelism")
    planned[tname] = DagPlan(
        name=tname,
        tasks=plans,
        targets=tuple(sorted(n for n in plans if n not in depended)),
        parallelism=None if parallelism is None else int(parallelism),
        fail_fast=bool(dag.get("failFast", True)),
    )
    return planned[tname]


def _templates(spec: Mapping[str, Any], where: str) -> dict[str, Mapping[str, Any]]:
    templates: dict[str, Mapping[str, Any]] = {}
    for t in spec.get("templates") or []:
        tname = t.get("name")
        if not tname or tname in templates:
            raise InvalidInputError(f"{where}: spec.templates: missing or duplicate name {tname!r}")
        kinds = [k for k in (*_OTHER_KINDS, "container", "dag") if k in t]
        if len(kinds) != 1:
            raise InvalidInputError(f"{where}: template '{tname}' must have exactly one type, found {kinds or 'none'}")
        if kinds[0] in _OTHER_KINDS:
            raise InvalidInputError(
                f"{where}: template '{tname}' is a '{kinds[0]}' template; "
                "the local engine runs only container and dag templates"
            )
        if "container" in t:
            _check_container(t)
        templates[tname] = t
    return templates


def _check_container(template: Mapping[str, Any]) -> None:
    where = f"template '{template['name']}'"
    command = template["container"].get("command")
    if not command:
        raise InvalidInputError(f"{where}: container.command is required to run locally")
    for e in template["container"].get("env") or []:
        if "valueFrom" in e and command[0] != _STEP_COMMAND:
            raise InvalidInputError(f"{where}: env '{e.get('name')}' uses valueFrom (unsupported)")
    if (template.get("retryStrategy") or {}).get("expression"):
        raise InvalidInputError(f"{where}: retryStrategy.expression is not supported")


def _task(task: Mapping[str, Any], templates: Mapping[str, Mapping[str, Any]], where: str) -> TaskPlan:
    name = task.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}: a task has no name")
    where = f"{where}: task '{name}'"
    if extra := sorted(set(task) - _TASK_KEYS):
        raise InvalidInputError(f"{where}: unsupported field(s) {', '.join(extra)} in the local engine")
    template = templates.get(task.get("template") or "")
    if template is None:
        raise InvalidInputError(f"{where}: template {task.get('template')!r} does not exist")
    if "dependencies" in task and "depends" in task:
        raise InvalidInputError(f"{where}: cannot use both 'depends' and 'dependencies'")
    if task.get("depends"):
        depends: ex.Expr | None = ex.parse_depends(str(task["depends"]), where=where)
    else:
        depends = ex.from_dependencies(task.get("dependencies") or [])
    arguments = _arguments(task.get("arguments") or {}, where)
    on = task.get("continueOn") or {}
    continue_on = {p for p, key in ((NodePhase.FAILED, "failed"), (NodePhase.ERROR, "error")) if on.get(key)}
    deps = tuple(dict.fromkeys(r.task for r in ex.refs(depends))) if depends is not None else ()
    return TaskPlan(name, template, arguments, depends, deps, frozenset(continue_on))


def _arguments(arguments: Mapping[str, Any], where: str) -> dict[str, str]:
    if arguments.get("artifacts"):
        raise InvalidInputError(f"{where}: artifacts are not supported by the local engine")
    values: dict[str, str] = {}
    for p in arguments.get("parameters") or []:
        if "value" not in p:
            raise InvalidInputError(f"{where}: arguments.parameters.{p.get('name')} needs a value (no valueFrom)")
        values[p["name"]] = str(p["value"])
    return values


def _check_acyclic(plans: Mapping[str, TaskPlan], where: str) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise InvalidInputError(f"{where}: dependency cycle {' -> '.join([*path, name])}")
        state[name] = 1
        for dep in plans[name].dependencies:
            visit(dep, [*path, name])
        state[name] = 2

    for name in plans:
        visit(name, [])

"""What the local engine runs: a WorkflowTemplate dict checked and turned into a plan.

The supported subset of Argo (anything else is rejected with an ``InvalidInputError`` naming the
template, task and field, never silently ignored when it would change what runs):

- ``spec.entrypoint`` naming a ``dag`` template whose tasks each call a ``container`` template;
- DAG ``tasks[].{name, template, dependencies | depends, arguments.parameters, continueOn}``,
  ``dag.failFast`` (default true) and template-level ``parallelism``;
- ``spec.{arguments.parameters, activeDeadlineSeconds, parallelism}``;
- container templates: ``container.{command, args, env[].value, workingDir}`` (image, resources
  and other pod settings are accepted and ignored), ``inputs.parameters`` (``value``/``default``),
  ``retryStrategy.{limit, retryPolicy, backoff.{duration, factor, maxDuration, cap}}`` and
  ``activeDeadlineSeconds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase
from forge.workflows.engine import expressions as ex
from forge.workflows.engine.durations import parse_duration
from forge.workflows.engine.substitution import substitute, substitute_tree

__all__ = ["Attempt", "Retry", "TaskPlan", "WorkflowPlan", "check_template", "plan_workflow"]

_OTHER_KINDS = ("steps", "script", "resource", "suspend", "http", "containerSet", "data", "plugin")
_TASK_KEYS = {"name", "template", "dependencies", "depends", "arguments", "continueOn"}
_POLICIES = {"Always", "OnFailure", "OnError"}


@dataclass(frozen=True, slots=True)
class Retry:
    limit: int = 0
    policy: str = "OnFailure"
    duration: float = 0.0
    factor: float = 1.0
    max_duration: float | None = None
    cap: float | None = None

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        wait = self.duration * self.factor ** (retry - 1)
        return min(wait, self.cap) if self.cap is not None else wait

    def retries_on(self, phase: NodePhase) -> bool:
        if phase == NodePhase.FAILED:
            return self.policy in {"Always", "OnFailure"}
        return phase == NodePhase.ERROR and self.policy in {"Always", "OnError"}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a task, every tag substituted."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    deadline: float | None
    retry: Retry


@dataclass(frozen=True, slots=True)
class TaskPlan:
    name: str
    template: Mapping[str, Any]
    arguments: Mapping[str, str]
    depends: ex.Expr | None
    dependencies: tuple[str, ...]
    continue_on: frozenset[NodePhase]

    def render(self, scope: Mapping[str, str], retries: int) -> Attempt:
        where = f"task '{self.name}'"
        args = {k: substitute(v, scope, where=f"{where}: arguments.parameters.{k}") for k, v in self.arguments.items()}
        local = dict(scope)
        local["retries"] = str(retries)
        tname = self.template["name"]
        for param in (self.template.get("inputs") or {}).get("parameters") or []:
            value = args.get(param["name"], param.get("value", param.get("default")))
            if value is None:
                raise InvalidInputError(f"{where}: inputs.parameters.{param['name']} was not supplied")
            local[f"inputs.parameters.{param['name']}"] = str(value)
        body = {k: v for k, v in self.template.items() if k != "name"}
        t = substitute_tree(body, local, where=f"template '{tname}'")
        container = t["container"]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
        deadline = t.get("activeDeadlineSeconds")
        deadline_field = f"template '{tname}'.activeDeadlineSeconds"
        return Attempt(
            argv=[str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]],
            env=env,
            cwd=container.get("workingDir"),
            deadline=None if deadline is None else parse_duration(deadline, field=deadline_field),
            retry=_retry(t.get("retryStrategy"), tname),
        )


@dataclass(frozen=True, slots=True)
class WorkflowPlan:
    tasks: Mapping[str, TaskPlan]
    targets: tuple[str, ...]
    parameters: Mapping[str, str]
    deadline: float | None
    parallelism: int | None
    fail_fast: bool

    def handles_failure(self, task: str) -> bool:
        """Whether a dependant names ``task.Failed``/``task.Errored`` (or it has continueOn): no fail-fast."""
        if self.tasks[task].continue_on:
            return True
        return any(
            r.task == task and r.result in {"Failed", "Errored"}
            for t in self.tasks.values()
            if t.depends is not None
            for r in ex.refs(t.depends)
        )


def check_template(template: Mapping[str, Any]) -> str:
    """Validate what can be checked without parameters; the template's name."""
    name = (template.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("WorkflowTemplate: metadata.name is required")
    _tasks(template, name)
    return name


def plan_workflow(template: Mapping[str, Any], parameters: Mapping[str, str], scope: Mapping[str, str]) -> WorkflowPlan:
    """The plan for one submission; every tag is checked with a dry run (``retries`` = 0)."""
    name = check_template(template)
    spec = template["spec"]
    tasks, dag_template = _tasks(template, name)
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
    for t in tasks.values():
        dry |= {f"tasks.{t.name}.outputs.result": "", f"tasks.{t.name}.exitCode": "0"}
    for t in tasks.values():
        t.render(dry, 0)
    depended = {d for t in tasks.values() for d in t.dependencies}
    deadline = spec.get("activeDeadlineSeconds")
    limits = [int(v) for v in (spec.get("parallelism"), dag_template.get("parallelism")) if v is not None]
    return WorkflowPlan(
        tasks=tasks,
        targets=tuple(sorted(n for n in tasks if n not in depended)),
        parameters=values,
        deadline=None if deadline is None else parse_duration(deadline, field="spec.activeDeadlineSeconds"),
        parallelism=min(limits) if limits else None,
        fail_fast=bool(dag_template["dag"].get("failFast", True)),
    )


def _tasks(template: Mapping[str, Any], name: str) -> tuple[dict[str, TaskPlan], Mapping[str, Any]]:
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
    dag = entry["dag"]
    if dag.get("target"):
        raise InvalidInputError(f"{where}: dag.target is not supported by the local engine")
    plans: dict[str, TaskPlan] = {}
    for task in dag.get("tasks") or []:
        plan = _task(task, templates, f"{where}: dag '{entry['name']}'")
        if plan.name in plans:
            raise InvalidInputError(f"{where}: duplicate task name '{plan.name}'")
        plans[plan.name] = plan
    if not plans:
        raise InvalidInputError(f"{where}: dag '{entry['name']}' has no tasks")
    for plan in plans.values():
        for dep in plan.dependencies:
            if dep not in plans:
                raise InvalidInputError(f"{where}: task '{plan.name}' depends on unknown task '{dep}'")
    _check_acyclic(plans, where)
    return plans, entry


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
    if not template["container"].get("command"):
        raise InvalidInputError(f"{where}: container.command is required to run locally")
    for e in template["container"].get("env") or []:
        if "valueFrom" in e:
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
    if "container" not in template:
        raise InvalidInputError(f"{where}: template '{template['name']}' must be a container template (no nested dags)")
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


def _retry(strategy: Mapping[str, Any] | None, tname: str) -> Retry:
    if not strategy:
        return Retry()
    where = f"template '{tname}'.retryStrategy"
    policy = strategy.get("retryPolicy") or "OnFailure"
    if policy not in _POLICIES:
        raise InvalidInputError(f"{where}.retryPolicy: {policy!r} is not one of {sorted(_POLICIES)}")
    backoff = strategy.get("backoff") or {}
    try:
        limit = int(strategy.get("limit", 0) or 0)
        factor = float(backoff.get("factor", 1) or 1)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    max_d, cap = backoff.get("maxDuration"), backoff.get("cap")
    return Retry(
        limit=limit,
        policy=policy,
        duration=parse_duration(backoff.get("duration", 0) or 0, field=f"{where}.backoff.duration"),
        factor=factor,
        max_duration=None if max_d is None else parse_duration(max_d, field=f"{where}.backoff.maxDuration"),
        cap=None if cap is None else parse_duration(cap, field=f"{where}.backoff.cap"),
    )

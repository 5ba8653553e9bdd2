"""The plan the local engine executes: checked templates turned into DAG and task plans.

A :class:`WorkflowPlan` holds the entrypoint :class:`DagPlan`; each :class:`TaskPlan` either runs
a container template (``render`` gives one :class:`Attempt`) or a dag template (``dag`` is its
plan, shared by every task calling that template, and ``inputs`` gives the scope it runs with).
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

__all__ = ["Attempt", "DagPlan", "Retry", "TaskPlan", "WorkflowPlan", "parse_retry"]

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
    dag: DagPlan | None = None  # the plan of the dag template this task runs, if it is one

    def inputs(self, scope: Mapping[str, str], retries: int | None) -> dict[str, str]:
        """``inputs.parameters.*`` of the template: the arguments substituted in the caller's scope.

        ``{{retries}}`` resolves in arguments only when ``retries`` is given (a container attempt).
        """
        where = f"task '{self.name}'"
        local = dict(scope) if retries is None else {**scope, "retries": str(retries)}
        args = {k: substitute(v, local, where=f"{where}: arguments.parameters.{k}") for k, v in self.arguments.items()}
        values: dict[str, str] = {}
        for param in (self.template.get("inputs") or {}).get("parameters") or []:
            value = args.get(param["name"], param.get("value", param.get("default")))
            if value is None:
                raise InvalidInputError(f"{where}: inputs.parameters.{param['name']} was not supplied")
            values[f"inputs.parameters.{param['name']}"] = str(value)
        return values

    def render(self, scope: Mapping[str, str], retries: int) -> Attempt:
        local = {**scope, "retries": str(retries), **self.inputs(scope, retries)}
        tname = self.template["name"]
        body = {k: v for k, v in self.template.items() if k != "name"}
        t = substitute_tree(body, local, where=f"template '{tname}'")
        container = t["container"]
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "valueFrom" not in e}
        deadline = t.get("activeDeadlineSeconds")
        deadline_field = f"template '{tname}'.activeDeadlineSeconds"
        return Attempt(
            argv=[str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]],
            env=env,
            cwd=container.get("workingDir"),
            deadline=None if deadline is None else parse_duration(deadline, field=deadline_field),
            retry=parse_retry(t.get("retryStrategy"), tname),
        )


@dataclass(frozen=True, slots=True)
class DagPlan:
    """One dag template: its tasks, leaf targets, ``failFast`` and ``parallelism``."""

    name: str
    tasks: Mapping[str, TaskPlan]
    targets: tuple[str, ...]
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

    def topological(self) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name not in seen:
                seen.add(name)
                for dep in self.tasks[name].dependencies:
                    visit(dep)
                order.append(name)

        for name in self.tasks:
            visit(name)
        return order


@dataclass(frozen=True, slots=True)
class WorkflowPlan:
    root: DagPlan
    parameters: Mapping[str, str]
    deadline: float | None
    parallelism: int | None  # spec.parallelism; each DagPlan has its own


def parse_retry(strategy: Mapping[str, Any] | None, tname: str) -> Retry:
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

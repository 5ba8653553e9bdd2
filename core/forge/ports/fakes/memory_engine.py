"""WorkflowEngine in memory, for unit tests of the controller's reconcilers: no Argo, no processes.

``MemoryEngine`` keeps WorkflowTemplates and workflows in a dict and never runs anything: how a
workflow ends is scripted by the test (``script(template_or_workflow, WorkflowOutcome(...))``, or
``default``). It passes the ``WorkflowEngine`` compliance suite (``tests/integration/engine``)
next to ``LocalWorkflowEngine`` and ``ArgoWorkflowEngine``, and behaves as they do:

- ``create_template`` is idempotent for the same ``spec`` and raises ``ConflictError`` for another
  ``spec`` under the same name (as Argo compares them); ``InvalidInputError`` for a template it
  cannot read (no ``metadata.name``, an entrypoint that is not a dag template, a task naming a
  missing template or task, a dependency cycle).
- ``submit`` makes ``<template>-<5 chars>`` carrying the template's ``workflowMetadata`` labels,
  the given labels and ``workflows.argoproj.io/workflow-template``; ``NotFoundError`` for an
  unknown template, ``InvalidInputError`` when a workflow parameter without a value is not given.
- Nodes are the DAG tasks at every depth (the template builder's ``group-<n>`` DAG tasks and
  their steps), keyed by task name (the dotted path when a name occurs twice, as the local
  engine does). Every read of a workflow (``status``, each poll of ``watch``) advances it: the
  first ``running_reads`` reads report it ``Running`` (the first tasks of the entrypoint DAG,
  and the first ones inside a nested DAG among them, ``Running``; the rest ``Pending``), then its
  final status. The final status follows Argo's default dependency semantics with ``failFast``:
  a task runs once every task it names succeeded (a ``depends`` expression counts only for the
  names in it) and each scripted failure fails its node with the scripted message; the tasks
  running beside it finish, no new task starts (``Omitted``), each enclosing DAG fails with
  ``child '<task>' failed: <message>`` and so does the workflow.
- ``hold`` keeps a workflow ``Running`` (``watch`` waits) until ``stop`` or ``release``.
- ``stop`` fails an unfinished workflow at once with the given message: running nodes
  ``Failed``, pending ones ``Skipped``, as the local engine reports it (Argo reports "Stopped
  with strategy 'Terminate'"); a finished workflow is left as it is.
- ``NotFoundError`` for an unknown (or lost) workflow from ``status``, ``watch`` and ``stop``.

Switches for what the real engines do on a bad day: ``lose(workflow)`` forgets a workflow, as the
local engine does when the controller restarts (a ``watch`` in progress raises ``NotFoundError``
at its next poll); ``restart()`` forgets every workflow and template; ``unavailable(n)`` makes the
next ``n`` calls raise ``ServiceUnavailableError`` (each poll of a ``watch`` is a call, as each GET
of Argo's polling is). ``calls`` records every call as ``(method, name)``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from forge.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.engine import NodePhase, NodeStatus, WorkflowPhase, WorkflowStatus

__all__ = ["EXIT_1", "MemoryEngine", "Submission", "WorkflowOutcome"]

EXIT_1 = "Error (exit code 1)"
_OMITTED = "omitted: depends condition not met"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
_TEMPLATE_LABEL = "workflows.argoproj.io/workflow-template"
_FAILED = {NodePhase.FAILED, NodePhase.ERROR}
_DEPENDS_TOKEN = re.compile(r"[^\s()&|!]+")
_TASK_RESULTS = {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed"}


@dataclass(frozen=True, slots=True)
class WorkflowOutcome:
    """How a workflow ends: ``failed``/``errored`` map leaf tasks to their node message.

    ``hold`` keeps it ``Running`` until ``stop`` or ``release``; ``running_reads`` is how many
    reads answer ``Running`` before the final status (0: final at the first read).
    """

    failed: Mapping[str, str] = field(default_factory=dict)
    errored: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False
    running_reads: int = 1

    @classmethod
    def failing(cls, *tasks: str, message: str = EXIT_1) -> WorkflowOutcome:
        return cls(failed=dict.fromkeys(tasks, message))


@dataclass(frozen=True, slots=True)
class Submission:
    """One ``submit`` as the engine took it (kept after the workflow is lost)."""

    name: str
    template: str
    parameters: Mapping[str, str]
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Task:
    name: str
    key: str  # node key
    deps: tuple[str, ...]
    children: tuple[_Task, ...] | None  # the nested DAG's tasks; None for a container (leaf)


@dataclass(frozen=True, slots=True)
class _Template:
    content: dict[str, Any]
    tasks: tuple[_Task, ...]  # the entrypoint DAG's
    required: frozenset[str]  # workflow parameters without a value
    labels: Mapping[str, str]  # spec.workflowMetadata.labels


@dataclass
class _Workflow:
    submission: Submission
    tree: tuple[_Task, ...]
    status: WorkflowStatus
    reads: int = 0
    released: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class MemoryEngine:
    """``WorkflowEngine`` in memory; every workflow ends as ``script``/``default`` say."""

    def __init__(
        self,
        *,
        default: WorkflowOutcome | None = None,
        namespace: str = "forge",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.default = default or WorkflowOutcome()
        self.namespace = namespace
        self.calls: list[tuple[str, str]] = []
        self.submissions: list[Submission] = []
        self._clock = clock
        self._scripts: dict[str, WorkflowOutcome] = {}
        self._templates: dict[str, _Template] = {}
        self._workflows: dict[str, _Workflow] = {}
        self._unavailable = 0

    # -- what tests script and read ---------------------------------------------------------------

    def script(self, name: str, outcome: WorkflowOutcome) -> None:
        """How the workflows of template ``name``, or the workflow ``name``, end (a workflow's wins).

        Read when a workflow is read, so a workflow can be scripted after ``submit``.
        """
        self._scripts[name] = outcome

    def release(self, workflow: str) -> None:
        """Let a held workflow go on to its scripted end (at its next read)."""
        wf = self._find(workflow)
        wf.released = True
        wf.notify()

    def lose(self, workflow: str) -> None:
        """Forget ``workflow``, as the local engine does when the controller restarts."""
        self._find(workflow)
        self._workflows.pop(workflow).notify()

    def restart(self) -> None:
        """Forget every workflow and template, as a new local engine knows none."""
        for name in list(self._workflows):
            self.lose(name)
        self._templates.clear()

    def unavailable(self, n: int) -> None:
        """The next ``n`` calls raise ``ServiceUnavailableError`` (an engine behind a restarting proxy)."""
        self._unavailable = n

    @property
    def templates(self) -> Mapping[str, Mapping[str, Any]]:
        return {name: t.content for name, t in self._templates.items()}

    def labels(self, workflow: str) -> Mapping[str, str]:
        return dict(self._find(workflow).submission.labels)

    def workflows(self) -> list[str]:
        return list(self._workflows)

    # -- WorkflowEngine -----------------------------------------------------------------------------

    async def create_template(self, template: Mapping[str, Any]) -> str:
        name = str((template.get("metadata") or {}).get("name") or "")
        self._call("create_template", name)
        if not name:
            raise InvalidInputError("WorkflowTemplate: metadata.name is required")
        content: dict[str, Any] = json.loads(json.dumps(template))
        existing = self._templates.get(name)
        if existing is not None:
            if _normal(existing.content.get("spec")) != _normal(content.get("spec")):
                raise ConflictError(
                    f"WorkflowTemplate '{name}' already exists in namespace '{self.namespace}' with a different spec",
                    details={"template": name},
                )
            return name
        self._templates[name] = _read_template(name, content)
        return name

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        self._call("submit", template_name)
        template = self._templates.get(template_name)
        if template is None:
            raise NotFoundError(f'workflowtemplates.argoproj.io "{template_name}" not found')
        missing = sorted(template.required - set(parameters))
        if missing:
            raise InvalidInputError(f"spec.arguments.parameters.{missing[0]}.value is required")
        name = self._new_name(template_name)
        submission = Submission(
            name, template_name, dict(parameters), {**template.labels, **labels, _TEMPLATE_LABEL: template_name}
        )
        self.submissions.append(submission)
        at = self._clock()
        nodes = dict(_running(template.tasks, at))
        status = WorkflowStatus(name, WorkflowPhase.RUNNING, None, at, None, nodes)
        self._workflows[name] = _Workflow(submission, template.tasks, status)
        return name

    async def status(self, workflow_name: str) -> WorkflowStatus:
        self._call("status", workflow_name)
        return self._read(self._find(workflow_name))

    async def watch(self, workflow_name: str) -> AsyncIterator[WorkflowStatus]:
        last: WorkflowStatus | None = None
        while True:
            self._call("watch", workflow_name)
            wf = self._find(workflow_name)
            changed = wf.changed
            status = self._read(wf)
            if status != last:
                yield status
                last = status
            if status.phase.is_final:
                return
            if self._held(wf):
                await changed.wait()
            else:
                await asyncio.sleep(0)

    async def stop(self, workflow_name: str, *, message: str) -> None:
        self._call("stop", workflow_name)
        wf = self._find(workflow_name)
        if wf.status.phase.is_final:
            return
        at = self._clock()
        nodes = {key: _stopped(node, message, at) for key, node in wf.status.nodes.items()}
        wf.status = replace(wf.status, phase=WorkflowPhase.FAILED, message=message, finished_at=at, nodes=nodes)
        wf.notify()

    # -- inside ---------------------------------------------------------------------------------------

    def _call(self, method: str, name: str) -> None:
        self.calls.append((method, name))
        if self._unavailable > 0:
            self._unavailable -= 1
            raise ServiceUnavailableError(f"the workflow engine is unavailable ({method} {name})")

    def _find(self, workflow: str) -> _Workflow:
        wf = self._workflows.get(workflow)
        if wf is None:
            raise NotFoundError(f'workflows.argoproj.io "{workflow}" not found')
        return wf

    def _outcome(self, wf: _Workflow) -> WorkflowOutcome:
        s = wf.submission
        return self._scripts.get(s.name) or self._scripts.get(s.template) or self.default

    def _held(self, wf: _Workflow) -> bool:
        return self._outcome(wf).hold and not wf.released

    def _read(self, wf: _Workflow) -> WorkflowStatus:
        """The status of this read; the workflow moves on to its end once it may."""
        if wf.status.phase.is_final:
            return wf.status
        wf.reads += 1
        outcome = self._outcome(wf)
        if not self._held(wf) and wf.reads > outcome.running_reads:
            at = self._clock()
            nodes: dict[str, NodeStatus] = {}
            phase, message = _settle(wf.tree, outcome, wf.status, at, nodes)
            wf.status = replace(
                wf.status, phase=WorkflowPhase(phase.value), message=message, finished_at=at, nodes=nodes
            )
            wf.notify()
        return wf.status

    def _new_name(self, template: str) -> str:
        while True:
            name = f"{template}-{''.join(secrets.choice(_NAME_ALPHABET) for _ in range(5))}"
            if name not in self._workflows and all(s.name != name for s in self.submissions):
                return name


# -- reading a template -------------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _read_template(name: str, content: Mapping[str, Any]) -> _Template:
    spec = content.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"WorkflowTemplate '{name}': spec is required")
    by_name = {t.get("name"): t for t in spec.get("templates") or [] if isinstance(t, Mapping)}
    entry = spec.get("entrypoint")
    if not isinstance(by_name.get(entry), Mapping) or "dag" not in by_name[entry]:
        raise InvalidInputError(f"WorkflowTemplate '{name}': spec.entrypoint must name a dag template")
    raw = _dag(name, by_name, str(entry), (), ())
    tasks = _keyed(raw, Counter(r.path[-1] for r in _walk(raw)))
    params = ((spec.get("arguments") or {}).get("parameters")) or []
    required = frozenset(str(p["name"]) for p in params if "value" not in p and "default" not in p)
    labels = dict(((spec.get("workflowMetadata") or {}).get("labels")) or {})
    return _Template(dict(content), tasks, required, labels)


@dataclass(frozen=True, slots=True)
class _Raw:
    """A task before node keys are given (they depend on the whole tree)."""

    path: tuple[str, ...]
    deps: tuple[str, ...]
    nested: tuple[_Raw, ...] | None


def _dag(
    wt: str, by_name: Mapping[Any, Any], template: str, path: tuple[str, ...], calling: tuple[str, ...]
) -> tuple[_Raw, ...]:
    if template in calling:
        raise InvalidInputError(f"WorkflowTemplate '{wt}': dag template '{template}' calls itself")
    tasks = (by_name[template].get("dag") or {}).get("tasks") or []
    names = [str(t.get("name") or "") for t in tasks]
    if not all(names) or len(set(names)) != len(names):
        raise InvalidInputError(f"WorkflowTemplate '{wt}': the tasks of '{template}' need unique names")
    raw: list[_Raw] = []
    for task, task_name in zip(tasks, names, strict=True):
        deps = _dependencies(task)
        unknown = sorted(set(deps) - set(names))
        if unknown:
            raise InvalidInputError(
                f"WorkflowTemplate '{wt}': task '{task_name}' depends on unknown task '{unknown[0]}'"
            )
        target = by_name.get(task.get("template"))
        if not isinstance(target, Mapping):
            raise InvalidInputError(f"WorkflowTemplate '{wt}': template '{task.get('template')}' does not exist")
        here = (*path, task_name)
        nested = _dag(wt, by_name, str(target["name"]), here, (*calling, template)) if "dag" in target else None
        raw.append(_Raw(here, deps, nested))
    _waves(wt, {r.path[-1]: r.deps for r in raw})  # refuses a cycle
    return tuple(raw)


def _dependencies(task: Mapping[str, Any]) -> tuple[str, ...]:
    names = [str(d) for d in task.get("dependencies") or []]
    for token in _DEPENDS_TOKEN.findall(str(task.get("depends") or "")):
        head, _, tail = token.rpartition(".")
        names.append(head if head and tail in _TASK_RESULTS else token)
    return tuple(dict.fromkeys(names))


def _walk(raw: Sequence[_Raw]) -> Iterator[_Raw]:
    for item in raw:
        yield item
        if item.nested is not None:
            yield from _walk(item.nested)


def _keyed(raw: Sequence[_Raw], counts: Counter[str]) -> tuple[_Task, ...]:
    """Tasks keyed by name, or by dotted path when the name occurs more than once in the tree."""
    return tuple(
        _Task(
            r.path[-1],
            r.path[-1] if counts[r.path[-1]] == 1 else ".".join(r.path),
            r.deps,
            None if r.nested is None else _keyed(r.nested, counts),
        )
        for r in raw
    )


def _waves(wt: str, deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each task's wave: 0 without dependencies, else one more than its latest dependency's."""
    wave: dict[str, int] = {}
    while len(wave) < len(deps):
        ready = {
            n: 1 + max((wave[d] for d in ds), default=-1)
            for n, ds in deps.items()
            if n not in wave and all(d in wave for d in ds)
        }
        if not ready:
            raise InvalidInputError(f"WorkflowTemplate '{wt}': dependency cycle among {sorted(set(deps) - set(wave))}")
        wave |= ready
    return wave


# -- workflow states --------------------------------------------------------------------------------


def _running(tasks: Sequence[_Task], at: datetime) -> Iterator[tuple[str, NodeStatus]]:
    """The first tasks of the DAG running (into nested DAGs), every other one pending."""
    for task in tasks:
        if task.deps:
            yield task.key, NodeStatus(task.key, NodePhase.PENDING)
            if task.children is not None:
                yield from _all(task.children, NodePhase.PENDING, None, None)
            continue
        attempts = 0 if task.children is not None else 1
        yield task.key, NodeStatus(task.key, NodePhase.RUNNING, started_at=at, attempts=attempts)
        if task.children is not None:
            yield from _running(task.children, at)


def _all(
    tasks: Sequence[_Task], phase: NodePhase, message: str | None, at: datetime | None
) -> Iterator[tuple[str, NodeStatus]]:
    for task in tasks:
        yield task.key, NodeStatus(task.key, phase, message, finished_at=at)
        if task.children is not None:
            yield from _all(task.children, phase, message, at)


def _stopped(node: NodeStatus, message: str, at: datetime) -> NodeStatus:
    if node.phase is NodePhase.RUNNING:
        return replace(node, phase=NodePhase.FAILED, message=message, finished_at=at)
    if node.phase is NodePhase.PENDING:
        return replace(node, phase=NodePhase.SKIPPED, message=message, finished_at=at)
    return node


def _settle(
    tasks: Sequence[_Task],
    outcome: WorkflowOutcome,
    running: WorkflowStatus,
    at: datetime,
    nodes: dict[str, NodeStatus],
) -> tuple[NodePhase, str | None]:
    """Every node of this DAG (and below) at its end, into ``nodes``; the DAG's phase and message."""
    by_name = {t.name: t for t in tasks}
    wave = _waves("", {t.name: t.deps for t in tasks})
    phases: dict[str, NodePhase] = {}
    culprit: str | None = None
    for current in sorted(set(wave.values())):
        for task in (t for t in tasks if wave[t.name] == current):
            if culprit is not None or any(phases[d] is not NodePhase.SUCCEEDED for d in task.deps):
                reason = _OMITTED if culprit is None else f"omitted: fail fast: task '{culprit}' failed"
                phases[task.name] = NodePhase.OMITTED
                nodes[task.key] = NodeStatus(task.key, NodePhase.OMITTED, reason, finished_at=at)
                if task.children is not None:
                    nodes.update(_all(task.children, NodePhase.OMITTED, reason, at))
                continue
            started = running.nodes[task.key].started_at or at
            if task.children is None:
                phase, message = _leaf(task.name, outcome)
                attempts = 1
            else:
                phase, message = _settle(task.children, outcome, running, at, nodes)
                attempts = 0
            phases[task.name] = phase
            nodes[task.key] = NodeStatus(task.key, phase, message, started, at, attempts)
        if culprit is None:
            culprit = next((t.name for t in tasks if wave[t.name] == current and phases[t.name] in _FAILED), None)
    if culprit is None:
        return NodePhase.SUCCEEDED, None
    node = nodes[by_name[culprit].key]
    return node.phase, f"child '{culprit}' failed" + (f": {node.message}" if node.message else "")


def _leaf(name: str, outcome: WorkflowOutcome) -> tuple[NodePhase, str | None]:
    if name in outcome.errored:
        return NodePhase.ERROR, outcome.errored[name]
    if name in outcome.failed:
        return NodePhase.FAILED, outcome.failed[name]
    return NodePhase.SUCCEEDED, None

"""``LocalWorkflowEngine``: the WorkflowEngine of the embedded single-machine mode (DESIGN §1).

It runs the very WorkflowTemplate Argo would run: the entrypoint DAG's tasks, each a container
template or a nested dag template (the template builder's ``main`` → ``group-<n>`` → steps),
whose containers' ``command`` + ``args`` run here: ``forge-step ...`` in-process through the
``step_runner`` (``forge.workflows.steps.entry.run_step`` bound to a bus), anything else as a
subprocess. The supported subset of Argo is listed in :mod:`forge.workflows.engine.spec`, the
DAG semantics in :mod:`forge.workflows.engine.level`, the node keys of the status (task names,
nested ones included) in :mod:`forge.workflows.engine.nodes`.

Lifecycle: every workflow runs in a task owned by the engine; ``aclose()`` (or leaving
``async with engine:``) kills every running container and fails the unfinished workflows.
Workflows stay queryable until the engine is closed (there is no TTL: it lives with the process).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.engine import WorkflowStatus
from forge.workflows.engine.containers import StepRunner
from forge.workflows.engine.dag import DagRun
from forge.workflows.engine.spec import check_template, plan_workflow

__all__ = ["LocalWorkflowEngine"]

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
_TEMPLATE_LABEL = "workflows.argoproj.io/workflow-template"


class LocalWorkflowEngine:
    """Runs WorkflowTemplates on this machine; implements ``forge.ports.WorkflowEngine``.

    ``max_parallel`` bounds the containers running at once across all workflows of this engine
    (a workflow's and its dag templates' ``parallelism`` apply as well; DAG nodes hold no slot);
    ``kill_grace`` is the time between SIGTERM and SIGKILL when a container is stopped.
    """

    def __init__(
        self,
        *,
        step_runner: StepRunner | None = None,
        max_parallel: int = 32,
        namespace: str = "forge",
        kill_grace: float = 5.0,
    ):
        if max_parallel < 1:
            raise InvalidInputError(f"max_parallel must be at least 1, not {max_parallel}")
        self._step_runner = step_runner
        self._namespace = namespace
        self._kill_grace = kill_grace
        self._machine_slots = asyncio.Semaphore(max_parallel)
        self._templates: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, DagRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill every running container and fail every unfinished workflow; idempotent."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for run in self._runs.values():
            run.abort("the local workflow engine shut down")

    async def create_template(self, template: Mapping[str, Any]) -> str:
        name = check_template(template)
        content = json.loads(json.dumps(template))
        existing = self._templates.get(name)
        if existing is not None and existing != content:
            raise ConflictError(
                f"WorkflowTemplate '{name}' already exists with a different content",
                details={"template": name},
            )
        self._templates[name] = content
        return name

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        if self._closed:
            raise InvalidInputError("the local workflow engine is closed")
        template = self._templates.get(template_name)
        if template is None:
            raise NotFoundError(f'workflowtemplates.argoproj.io "{template_name}" not found')
        name = self._new_name(template_name)
        all_labels = {**labels, _TEMPLATE_LABEL: template_name}
        scope = {
            "workflow.name": name,
            "workflow.namespace": self._namespace,
            "workflow.uid": str(uuid.uuid4()),
            **{f"workflow.labels.{k}": v for k, v in all_labels.items()},
        }
        plan = plan_workflow(template, parameters, scope)
        scope |= {f"workflow.parameters.{k}": v for k, v in plan.parameters.items()}
        run = DagRun(
            name,
            plan,
            scope,
            step_runner=self._step_runner,
            machine_slots=self._machine_slots,
            kill_grace=self._kill_grace,
        )
        self._runs[name] = run
        task = asyncio.get_running_loop().create_task(run.run(), name=f"workflow {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return name

    async def status(self, workflow_name: str) -> WorkflowStatus:
        return self._run(workflow_name).snapshot()

    async def watch(self, workflow_name: str) -> AsyncIterator[WorkflowStatus]:
        async for status in self._run(workflow_name).changes():
            yield status

    async def stop(self, workflow_name: str, *, message: str) -> None:
        """Kill the running containers (SIGTERM, then SIGKILL after ``kill_grace``); returns once final."""
        run = self._run(workflow_name)
        run.shutdown(message)
        await run.done.wait()

    def _run(self, name: str) -> DagRun:
        run = self._runs.get(name)
        if run is None:
            raise NotFoundError(f'workflows.argoproj.io "{name}" not found')
        return run

    def _new_name(self, template_name: str) -> str:
        while True:
            name = f"{template_name}-{''.join(secrets.choice(_NAME_ALPHABET) for _ in range(5))}"
            if name not in self._runs:
                return name

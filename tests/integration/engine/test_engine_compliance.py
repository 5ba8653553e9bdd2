"""WorkflowEngine compliance: every engine (see conftest ``HARNESSES``) passes the same tests.

The template has the template builder's shape (``main`` → ``group-1`` → ``group-2``, each group a
nested DAG of container tasks, ``b`` depending on ``a``), so the fake Argo Server can run it too.
Only what the port promises is asserted: where the engines legitimately differ (the messages of
a stopped workflow, whether the leaves of a group that never ran are reported) nothing is.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import pytest

from forge.errors import ConflictError, NotFoundError
from forge.ports.engine import NodePhase, WorkflowEngine, WorkflowPhase, WorkflowStatus

if TYPE_CHECKING:
    from tests.integration.engine.conftest import EngineHarness

WITHIN = 30.0  # upper bound for a workflow of instant tasks to end
LABELS = {"team": "compliance", "forge.projectcatalyst.io/run-id": "0f0f0f0f-1234-5678-9abc-def012345678"}
LEAVES = {"a", "b", "c", "d"}
UNSETTLED = {NodePhase.PENDING, NodePhase.RUNNING}


def _leaf(name: str, depends: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": name,
        "template": "step",
        "arguments": {"parameters": [{"name": "task", "value": name}]},
    }
    if depends:
        task["depends"] = depends
    return task


def template(name: str = "forge-run-compliance", *, command: str = "forge-step") -> dict[str, Any]:
    step = {
        "name": "step",
        "inputs": {"parameters": [{"name": "task"}]},
        "container": {
            "image": "ghcr.io/input-output-hk/catalyst-forge:test",
            "command": [command],
            "args": ["{{workflow.name}}", "{{inputs.parameters.task}}", "{{workflow.labels.team}}"],
        },
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "catalyst-forge"}},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "failFast": True,
                        "tasks": [
                            {"name": "group-1", "template": "group-1"},
                            {"name": "group-2", "template": "group-2", "depends": "group-1"},
                        ],
                    },
                },
                {"name": "group-1", "dag": {"failFast": True, "tasks": [_leaf("a"), _leaf("b", "a"), _leaf("c")]}},
                {"name": "group-2", "dag": {"failFast": True, "tasks": [_leaf("d")]}},
                step,
            ],
        },
    }


async def submit(engine: WorkflowEngine) -> str:
    name = await engine.create_template(template())
    return await engine.submit(name, parameters={}, labels=LABELS)


async def follow(engine: WorkflowEngine, workflow: str) -> list[WorkflowStatus]:
    async with asyncio.timeout(WITHIN):
        return [status async for status in engine.watch(workflow)]


async def running(engine: WorkflowEngine, workflow: str, task: str) -> None:
    """Until ``task`` runs (the local engine starts it a moment after ``submit``)."""
    async with asyncio.timeout(WITHIN):
        while (node := (await engine.status(workflow)).nodes.get(task)) is None or node.phase is not NodePhase.RUNNING:
            await asyncio.sleep(0.02)


async def test_create_template_is_idempotent_and_conflicts_on_another_spec(engine_harness: EngineHarness) -> None:
    engine = engine_harness.engine
    assert await engine.create_template(template()) == "forge-run-compliance"
    assert await engine.create_template(template()) == "forge-run-compliance"
    with pytest.raises(ConflictError):
        await engine.create_template(template(command="forge-other"))
    assert await engine.create_template(template("forge-run-other", command="forge-other")) == "forge-run-other"


async def test_submit_names_the_workflow_after_its_template_and_carries_the_labels(
    engine_harness: EngineHarness,
) -> None:
    engine = engine_harness.engine
    first, second = await submit(engine), await submit(engine)
    assert first != second
    for workflow in (first, second):
        assert workflow.startswith("forge-run-compliance-")
        assert len(workflow) > len("forge-run-compliance-")
        assert (await follow(engine, workflow))[-1].name == workflow
        assert engine_harness.labels(workflow)["team"] == "compliance"


async def test_watch_yields_changes_until_succeeded(engine_harness: EngineHarness) -> None:
    engine = engine_harness.engine
    workflow = await submit(engine)
    seen = await follow(engine, workflow)
    final = seen[-1]
    assert final.phase is WorkflowPhase.SUCCEEDED
    assert all(not s.phase.is_final for s in seen[:-1])
    assert all(a != b for a, b in itertools.pairwise(seen))
    assert {name: node.phase for name, node in final.nodes.items()} == dict.fromkeys(
        {"group-1", "group-2", *LEAVES}, NodePhase.SUCCEEDED
    )
    assert final.started_at is not None
    assert final.finished_at is not None
    assert await engine.status(workflow) == final
    assert await follow(engine, workflow) == [final]  # a finished workflow: its final status, once


async def test_a_failing_task_fails_its_node_and_the_workflow(engine_harness: EngineHarness) -> None:
    engine_harness.fail("b")
    engine = engine_harness.engine
    final = (await follow(engine, await submit(engine)))[-1]
    assert final.phase is WorkflowPhase.FAILED
    assert final.message
    failed = final.nodes["b"]
    assert failed.phase is NodePhase.FAILED
    assert failed.message == "Error (exit code 3)"
    # what the execution reconciler settles: the failed leaves, here exactly the one that failed
    assert {n for n, s in final.nodes.items() if n in LEAVES and s.phase in {NodePhase.FAILED, NodePhase.ERROR}} == {
        "b"
    }
    assert final.nodes["a"].phase is NodePhase.SUCCEEDED
    assert final.nodes["group-1"].phase is NodePhase.FAILED
    assert final.nodes["group-2"].phase is NodePhase.OMITTED  # the next group never runs
    assert "d" not in final.nodes or final.nodes["d"].phase is not NodePhase.SUCCEEDED
    assert not any(s.phase in UNSETTLED for s in final.nodes.values())


async def test_stop_fails_a_running_workflow_and_ends_its_watch(engine_harness: EngineHarness) -> None:
    engine_harness.hold()
    engine = engine_harness.engine
    workflow = await submit(engine)
    await running(engine, workflow, "a")
    seen: list[WorkflowStatus] = []
    watching = asyncio.Event()

    async def watch() -> None:
        async for status in engine.watch(workflow):
            seen.append(status)
            watching.set()

    watcher = asyncio.create_task(watch())
    async with asyncio.timeout(WITHIN):
        await watching.wait()
    assert seen[0].phase is WorkflowPhase.RUNNING
    await engine.stop(workflow, message="cancelled by the compliance suite")
    async with asyncio.timeout(WITHIN):
        await watcher
    final = seen[-1]
    assert final.phase is WorkflowPhase.FAILED
    assert final.finished_at is not None
    assert final.nodes["a"].phase is NodePhase.FAILED  # it was running
    assert final.nodes["a"].message
    assert not any(s.phase in UNSETTLED for s in final.nodes.values())
    assert final == await engine.status(workflow)


async def test_unknown_workflows_and_templates_are_not_found(engine_harness: EngineHarness) -> None:
    engine = engine_harness.engine
    await engine.create_template(template())
    with pytest.raises(NotFoundError):
        await engine.submit("forge-run-missing", parameters={}, labels=LABELS)
    with pytest.raises(NotFoundError):
        await engine.status("forge-run-compliance-zzzzz")
    with pytest.raises(NotFoundError):
        await follow(engine, "forge-run-compliance-zzzzz")
    with pytest.raises(NotFoundError):
        await engine.stop("forge-run-compliance-zzzzz", message="nothing to stop")

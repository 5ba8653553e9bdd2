"""MemoryEngine beyond the compliance suite: the switches only a fake has, and its scripting.

What it shares with the real engines (templates, submit, watch, a failing task, stop, not found)
is proven in ``tests/integration/engine/test_engine_compliance.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from forge.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.engine import NodePhase, NodeStatus, WorkflowEngine, WorkflowPhase, WorkflowStatus
from forge.ports.fakes import MemoryEngine
from forge.ports.fakes.memory_engine import EXIT_1, WorkflowOutcome

GOLDEN = Path(__file__).parents[2] / "golden" / "workflow_templates" / "example-monorepo.yaml"


def container(name: str = "step") -> dict[str, Any]:
    return {"name": name, "container": {"image": "alpine:3.20", "command": ["true"]}}


def dag_template(name: str = "wt", **groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The builder's shape: ``main`` runs each group (a dag template) after the previous one."""
    names = list(groups)
    main = [{"name": g, "template": g, **({"depends": names[i - 1]} if i else {})} for i, g in enumerate(names)]
    return {
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": main}},
                *({"name": g, "dag": {"tasks": tasks}} for g, tasks in groups.items()),
                container(),
            ],
        },
    }


def leaf(name: str, depends: str | None = None) -> dict[str, Any]:
    return {"name": name, "template": "step", **({"depends": depends} if depends else {})}


SIMPLE = dag_template(group1=[leaf("a"), leaf("b", "a")], group2=[leaf("c")])


async def started(engine: WorkflowEngine, template: dict[str, Any] = SIMPLE, **labels: str) -> str:
    name = await engine.create_template(template)
    return await engine.submit(name, parameters={}, labels=labels)


async def follow(engine: WorkflowEngine, workflow: str) -> list[WorkflowStatus]:
    async with asyncio.timeout(5):
        return [s async for s in engine.watch(workflow)]


def phases(status: WorkflowStatus) -> dict[str, NodePhase]:
    return {name: node.phase for name, node in status.nodes.items()}


async def test_reads_advance_a_workflow_from_running_to_its_end() -> None:
    engine = MemoryEngine()
    workflow = await started(engine, team="ci")
    first = await engine.status(workflow)
    assert first.phase is WorkflowPhase.RUNNING
    assert phases(first) == {
        "group1": NodePhase.RUNNING,
        "a": NodePhase.RUNNING,
        "b": NodePhase.PENDING,
        "group2": NodePhase.PENDING,
        "c": NodePhase.PENDING,
    }
    final = await engine.status(workflow)
    assert final.phase is WorkflowPhase.SUCCEEDED
    assert set(phases(final).values()) == {NodePhase.SUCCEEDED}
    assert final.nodes["a"].attempts == 1
    assert final.nodes["group1"].attempts == 0
    assert final.nodes["a"].started_at == first.nodes["a"].started_at
    assert engine.labels(workflow) == {"team": "ci", "workflows.argoproj.io/workflow-template": "wt"}
    assert [s.name for s in engine.submissions] == [workflow]
    assert engine.calls == [("create_template", "wt"), ("submit", "wt"), ("status", workflow), ("status", workflow)]


async def test_running_reads_sets_how_long_it_runs() -> None:
    engine = MemoryEngine(default=WorkflowOutcome(running_reads=3))
    seen = await follow(engine, await started(engine))
    assert [s.phase for s in seen] == [WorkflowPhase.RUNNING, WorkflowPhase.SUCCEEDED]  # watch yields changes only
    assert len([c for c in engine.calls if c[0] == "watch"]) == 4
    instant = MemoryEngine(default=WorkflowOutcome(running_reads=0))
    assert [s.phase for s in await follow(instant, await started(instant))] == [WorkflowPhase.SUCCEEDED]


async def test_scripts_by_template_and_by_workflow() -> None:
    engine = MemoryEngine(default=WorkflowOutcome.failing("c"))
    other = dag_template("other", group1=[leaf("x")])
    engine.script("other", WorkflowOutcome())
    by_default, by_template = await started(engine), await started(engine, other)
    by_workflow = await started(engine)
    engine.script(by_workflow, WorkflowOutcome(errored={"a": "pod deleted"}))  # after submit: read at the end
    assert (await follow(engine, by_template))[-1].phase is WorkflowPhase.SUCCEEDED

    failed = (await follow(engine, by_default))[-1]
    assert failed.phase is WorkflowPhase.FAILED
    assert failed.message == f"child 'group2' failed: child 'c' failed: {EXIT_1}"
    assert phases(failed) == {
        "group1": NodePhase.SUCCEEDED,
        "a": NodePhase.SUCCEEDED,
        "b": NodePhase.SUCCEEDED,
        "group2": NodePhase.FAILED,
        "c": NodePhase.FAILED,
    }

    errored = (await follow(engine, by_workflow))[-1]
    assert errored.phase is WorkflowPhase.ERROR
    assert errored.nodes["a"].phase is NodePhase.ERROR
    assert errored.nodes["a"].message == "pod deleted"
    omitted = "omitted: fail fast: task 'a' failed"
    b = errored.nodes["b"]
    assert b == NodeStatus("b", NodePhase.OMITTED, omitted, None, b.finished_at)
    assert {errored.nodes[n].phase for n in ("group2", "c")} == {NodePhase.OMITTED}


async def test_fail_fast_lets_running_tasks_finish_and_omits_the_rest() -> None:
    template = dag_template(g=[leaf("bad"), leaf("slow"), leaf("after", "slow"), leaf("child", "bad && slow")])
    engine = MemoryEngine(default=WorkflowOutcome.failing("bad", message="Error (exit code 3)"))
    final = (await follow(engine, await started(engine, template)))[-1]
    assert phases(final) == {
        "g": NodePhase.FAILED,
        "bad": NodePhase.FAILED,
        "slow": NodePhase.SUCCEEDED,
        "after": NodePhase.OMITTED,
        "child": NodePhase.OMITTED,
    }
    assert final.message == "child 'g' failed: child 'bad' failed: Error (exit code 3)"


async def test_the_golden_template_runs_with_its_task_names() -> None:
    template = YAML(typ="safe").load(GOLDEN.read_text())
    tasks = {
        task["name"]
        for t in template["spec"]["templates"]
        if t["name"] != "main" and "dag" in t
        for task in t["dag"]["tasks"]
    }
    engine = MemoryEngine(default=WorkflowOutcome.failing("check-hello-lint"))
    final = (await follow(engine, await started(engine, template)))[-1]
    assert tasks <= set(final.nodes)
    assert set(final.nodes) - tasks == {t["name"] for t in template["spec"]["templates"][0]["dag"]["tasks"]}
    failed = {name for name, node in final.nodes.items() if node.phase in {NodePhase.FAILED, NodePhase.ERROR}}
    assert failed == {"check-hello-lint", "group-1"}
    labels = engine.labels(final.name)
    assert labels["app.kubernetes.io/managed-by"] == "catalyst-forge"  # the template's workflowMetadata


async def test_hold_keeps_it_running_until_released() -> None:
    engine = MemoryEngine(default=WorkflowOutcome(hold=True, failed={"b": "Error (exit code 2)"}))
    workflow = await started(engine)
    seen: list[WorkflowStatus] = []

    async def watch() -> None:
        seen.extend([s async for s in engine.watch(workflow)])

    watcher = asyncio.create_task(watch())
    for _ in range(20):
        await asyncio.sleep(0)
    assert (await engine.status(workflow)).phase is WorkflowPhase.RUNNING
    assert not watcher.done()
    engine.release(workflow)
    async with asyncio.timeout(5):
        await watcher
    assert [s.phase for s in seen] == [WorkflowPhase.RUNNING, WorkflowPhase.FAILED]
    assert seen[-1].nodes["b"].message == "Error (exit code 2)"


async def test_stop_fails_it_once_and_leaves_a_finished_one_alone() -> None:
    engine = MemoryEngine(default=WorkflowOutcome(hold=True))
    workflow = await started(engine)
    watchers = [asyncio.create_task(follow(engine, workflow)) for _ in range(2)]
    await asyncio.sleep(0)
    await engine.stop(workflow, message="cancelled by request")
    for seen in await asyncio.gather(*watchers):
        assert seen[-1].phase is WorkflowPhase.FAILED
    final = await engine.status(workflow)
    assert final.message == "cancelled by request"
    assert phases(final) == {
        "group1": NodePhase.FAILED,
        "a": NodePhase.FAILED,
        "b": NodePhase.SKIPPED,
        "group2": NodePhase.SKIPPED,
        "c": NodePhase.SKIPPED,
    }
    await engine.stop(workflow, message="again")
    engine.release(workflow)
    assert await engine.status(workflow) == final


async def test_a_lost_workflow_is_not_found_even_by_a_watch_in_progress() -> None:
    engine = MemoryEngine(default=WorkflowOutcome(hold=True))
    workflow = await started(engine)
    watcher = asyncio.create_task(follow(engine, workflow))
    await asyncio.sleep(0)
    engine.lose(workflow)
    with pytest.raises(NotFoundError):
        await watcher
    for call in (engine.status(workflow), engine.stop(workflow, message="x")):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(NotFoundError):
        engine.lose(workflow)
    again = await engine.submit("wt", parameters={}, labels={})  # the controller's resubmission
    assert again != workflow
    assert engine.workflows() == [again]


async def test_restart_forgets_workflows_and_templates() -> None:
    engine = MemoryEngine()
    workflow = await started(engine)
    engine.restart()
    with pytest.raises(NotFoundError):
        await engine.status(workflow)
    with pytest.raises(NotFoundError):
        await engine.submit("wt", parameters={}, labels={})
    assert await engine.create_template(SIMPLE) == "wt"


async def test_unavailable_fails_the_next_calls_then_recovers() -> None:
    engine = MemoryEngine()
    name = await engine.create_template(SIMPLE)
    engine.unavailable(2)
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            await engine.submit(name, parameters={}, labels={})
    assert engine.submissions == []
    workflow = await engine.submit(name, parameters={}, labels={})
    engine.unavailable(1)
    watch = engine.watch(workflow)
    with pytest.raises(ServiceUnavailableError):
        await anext(watch)
    assert (await follow(engine, workflow))[-1].phase is WorkflowPhase.SUCCEEDED


async def test_a_watch_fails_midway_when_the_engine_goes_away() -> None:
    engine = MemoryEngine(default=WorkflowOutcome(running_reads=5))
    workflow = await started(engine)
    watch = engine.watch(workflow)
    assert (await anext(watch)).phase is WorkflowPhase.RUNNING
    engine.unavailable(1)
    with pytest.raises(ServiceUnavailableError):
        await anext(watch)


async def test_templates_conflict_on_another_spec_only() -> None:
    engine = MemoryEngine()
    await engine.create_template(SIMPLE)
    relabelled = {**SIMPLE, "metadata": {"name": "wt", "labels": {"x": "y"}}}
    assert await engine.create_template(relabelled) == "wt"  # as Argo: only the spec is compared
    with pytest.raises(ConflictError):
        await engine.create_template(dag_template(group1=[leaf("a")]))
    assert engine.templates["wt"] == SIMPLE


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"spec": {}}, "metadata.name is required"),
        ({"metadata": {"name": "x"}, "spec": {"entrypoint": "step", "templates": [container()]}}, "dag template"),
        (dag_template(g=[{"name": "a", "template": "nope"}]), "template 'nope' does not exist"),
        (dag_template(g=[leaf("a", "b.Succeeded")]), "unknown task 'b'"),
        (dag_template(g=[leaf("a", "b"), leaf("b", "a")]), "dependency cycle"),
        (dag_template(g=[leaf("a"), leaf("a")]), "unique names"),
    ],
)
async def test_templates_it_cannot_read_are_refused(template: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await MemoryEngine().create_template(template)


async def test_required_parameters_and_repeated_task_names() -> None:
    template = dag_template(one=[leaf("lint")], two=[leaf("lint")])
    template["spec"]["arguments"] = {"parameters": [{"name": "run-id"}, {"name": "branch", "value": ""}]}
    engine = MemoryEngine()
    await engine.create_template(template)
    with pytest.raises(InvalidInputError, match="run-id"):
        await engine.submit("wt", parameters={}, labels={})
    workflow = await engine.submit("wt", parameters={"run-id": "r"}, labels={})
    final = (await follow(engine, workflow))[-1]
    assert set(final.nodes) == {"one", "two", "one.lint", "two.lint"}  # as the local engine keys them

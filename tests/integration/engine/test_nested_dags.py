"""LocalWorkflowEngine running DAG tasks whose template is itself a dag template (Argo nested DAGs).

The template builder's shape (``main`` → ``group-<n>`` → ``forge-step-*`` containers) is run
for real at the end; ordering and concurrency are observed through lines the tasks append to a
file, never through wall-clock durations.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest

from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase, WorkflowPhase
from forge.workflows.engine import LocalWorkflowEngine
from forge.workflows.templates import TemplateSpec, build_template, plan_tasks

from .support import (
    alive,
    events,
    final,
    log_task,
    logging_template,
    max_concurrency,
    phases,
    run,
    shell,
    task,
    workflow_template,
)

DEADLINE = "Step exceeded its deadline"


def dag(name: str, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "dag": {"tasks": tasks}, **extra}


async def wait_for_lines(path: Path, count: int) -> None:
    async with asyncio.timeout(10):
        while not path.exists() or len(path.read_text().split()) < count:
            await asyncio.sleep(0.02)


# -- semantics -----------------------------------------------------------------------------------
async def test_nested_dags_run_in_order_at_any_depth(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    templates = [
        logging_template(log, "sleep 0.1"),
        dag("first", [log_task("a1"), log_task("a2", depends="a1")]),
        dag("second", [log_task("b1"), task("deeper", "third"), log_task("b2", depends="b1 && deeper")]),
        dag("third", [log_task("c1")]),
    ]
    main = [task("group-1", "first"), task("group-2", "second", depends="group-1")]
    status = await run(engine, workflow_template(main, templates))
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert status.message is None
    assert phases(status) == dict.fromkeys(
        ["group-1", "a1", "a2", "group-2", "b1", "deeper", "c1", "b2"], NodePhase.SUCCEEDED
    )
    order = events(log)
    assert len(order) == 10
    assert order.index(("end", "a1")) < order.index(("start", "a2"))
    group_1_end = order.index(("end", "a2"))
    assert all(order.index(("start", n)) > group_1_end for n in ("b1", "c1", "b2"))
    assert order.index(("start", "b2")) > max(order.index(("end", "b1")), order.index(("end", "c1")))
    group = status.nodes["group-1"]
    assert group.attempts == 0
    assert group.started_at is not None
    assert group.finished_at is not None
    assert group.started_at <= status.nodes["a1"].started_at  # type: ignore[operator]
    assert group.finished_at >= status.nodes["a2"].finished_at  # type: ignore[operator]


async def test_same_name_in_two_nested_dags_is_keyed_by_its_path(engine: LocalWorkflowEngine) -> None:
    templates = [shell("ok", "echo ran"), dag("grp", [task("lint", "ok")])]
    status = await run(engine, workflow_template([task("x", "grp"), task("y", "grp", depends="x")], templates))
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert set(status.nodes) == {"x", "y", "x.lint", "y.lint"}
    assert status.nodes["y.lint"].name == "y.lint"
    assert status.nodes["x.lint"].outputs["result"] == "ran\n"


async def test_failure_in_group_1_fails_it_and_omits_group_2(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    templates = [
        logging_template(log, "sleep 0.5"),
        shell("fail", "exit 3"),
        dag("g1", [task("bad", "fail"), log_task("slow"), log_task("after-slow", depends="slow")]),
        dag("g2", [log_task("later"), task("deeper", "g3")]),
        dag("g3", [log_task("deepest")]),
    ]
    status = await run(
        engine, workflow_template([task("group-1", "g1"), task("group-2", "g2", depends="group-1")], templates)
    )
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "child 'group-1' failed: child 'bad' failed: Error (exit code 3)"
    assert phases(status) == {
        "group-1": NodePhase.FAILED,
        "bad": NodePhase.FAILED,
        "slow": NodePhase.SUCCEEDED,  # running when bad failed: it finishes
        "after-slow": NodePhase.OMITTED,  # g1's failFast: nothing new starts
        "group-2": NodePhase.OMITTED,  # main's failFast
        "later": NodePhase.OMITTED,
        "deeper": NodePhase.OMITTED,
        "deepest": NodePhase.OMITTED,
    }
    assert status.nodes["group-1"].message == "child 'bad' failed: Error (exit code 3)"
    assert status.nodes["group-2"].message == "omitted: fail fast: task 'group-1' failed"
    assert status.nodes["later"].attempts == 0
    assert {n for _, n in events(log)} == {"slow"}


async def test_nested_fail_fast_false_and_handled_failures(engine: LocalWorkflowEngine) -> None:
    inner = dag("inner", [task("bad", "fail"), task("handler", "ok", depends="bad.Failed")])
    other = dag("other", [task("bad-2", "fail"), task("independent", "slow")])
    other["dag"]["failFast"] = False
    templates = [shell("ok", "true"), shell("slow", "sleep 0.3"), shell("fail", "exit 1"), inner, other]
    main = [task("handled", "inner"), task("next", "ok", depends="handled"), task("unhandled", "other")]
    status = await run(engine, workflow_template(main, templates))
    # the handled failure is the inner DAG's business: the nested DAG succeeds (its leaf succeeded)
    assert status.nodes["handled"].phase == NodePhase.SUCCEEDED
    assert status.nodes["next"].phase == NodePhase.SUCCEEDED
    assert status.nodes["independent"].phase == NodePhase.SUCCEEDED  # failFast false inside "other"
    assert status.nodes["unhandled"].phase == NodePhase.FAILED
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "child 'unhandled' failed: child 'bad-2' failed: Error (exit code 1)"


async def test_workflow_deadline_reaches_nested_containers(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    templates = [
        shell("slow", f"echo $$ >> {pid_file}; exec sleep 30"),
        shell("ok", "true"),
        dag(
            "g1", [task("ran", "ok"), task("sleeper", "slow", depends="ran"), task("waiting", "ok", depends="sleeper")]
        ),
        dag("g2", [task("never", "ok")]),
    ]
    main = [task("group-1", "g1"), task("group-2", "g2", depends="group-1")]
    status = await run(engine, workflow_template(main, templates, activeDeadlineSeconds=1))
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == DEADLINE
    assert phases(status) == {
        "group-1": NodePhase.FAILED,
        "ran": NodePhase.SUCCEEDED,
        "sleeper": NodePhase.FAILED,
        "waiting": NodePhase.SKIPPED,
        "group-2": NodePhase.SKIPPED,
        "never": NodePhase.SKIPPED,
    }
    assert status.nodes["sleeper"].message == DEADLINE
    assert status.nodes["group-1"].message == DEADLINE
    assert not alive(int(pid_file.read_text()))


async def test_stop_reaches_nested_containers(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    templates = [
        shell("busy", f"trap '' TERM; sleep 30 & echo $! >> {pids}; echo $$ >> {pids}; wait"),
        dag("g1", [task("busy", "busy"), task("next", "busy", depends="busy")]),
        dag("outer", [task("inner", "g1")]),
        dag("g2", [task("never", "busy")]),
    ]
    name = await engine.create_template(
        workflow_template([task("group-1", "outer"), task("group-2", "g2", depends="group-1")], templates)
    )
    workflow = await engine.submit(name, parameters={}, labels={})
    await wait_for_lines(pids, 2)
    running = await engine.status(workflow)
    assert phases(running) == {
        "group-1": NodePhase.RUNNING,
        "inner": NodePhase.RUNNING,
        "busy": NodePhase.RUNNING,
        "next": NodePhase.PENDING,
        "group-2": NodePhase.PENDING,
        "never": NodePhase.PENDING,
    }
    await engine.stop(workflow, message="cancelled by alice")
    status = await engine.status(workflow)
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "cancelled by alice"
    assert phases(status) == {
        "group-1": NodePhase.FAILED,
        "inner": NodePhase.FAILED,
        "busy": NodePhase.FAILED,
        "next": NodePhase.SKIPPED,
        "group-2": NodePhase.SKIPPED,
        "never": NodePhase.SKIPPED,
    }
    assert {s.message for s in status.nodes.values()} == {"cancelled by alice"}
    assert [alive(int(p)) for p in pids.read_text().split()] == [False, False]


async def test_parameters_flow_into_nested_dags(engine: LocalWorkflowEngine) -> None:
    echo = shell(
        "echo",
        "printf '%s|%s|%s' '{{inputs.parameters.text}}' '{{workflow.parameters.who}}' '{{workflow.name}}'",
        inputs={"parameters": [{"name": "text"}]},
    )
    inner = dag(
        "inner",
        [
            task(
                "say", "echo", arguments={"parameters": [{"name": "text", "value": "{{inputs.parameters.greeting}}"}]}
            ),
            task(
                "relay",
                "echo",
                depends="say",
                arguments={
                    "parameters": [
                        {"name": "text", "value": "got {{tasks.say.outputs.result}} {{inputs.parameters.mark}}"}
                    ]
                },
            ),
        ],
        inputs={"parameters": [{"name": "greeting"}, {"name": "mark", "default": "!"}]},
    )
    outer = dag(
        "outer",
        [
            task(
                "deep",
                "inner",
                arguments={"parameters": [{"name": "greeting", "value": "{{inputs.parameters.greeting}}"}]},
            )
        ],
        inputs={"parameters": [{"name": "greeting"}]},
    )
    main = [
        task(
            "group",
            "outer",
            arguments={"parameters": [{"name": "greeting", "value": "hi {{workflow.parameters.who}}"}]},
        )
    ]
    template = workflow_template(
        main, [echo, inner, outer], arguments={"parameters": [{"name": "who", "value": "world"}]}
    )
    name = await engine.create_template(template)
    workflow = await engine.submit(name, parameters={"who": "forge"}, labels={})
    status = await final(engine, workflow)
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert status.nodes["say"].outputs["result"] == f"hi forge|forge|{workflow}"
    assert status.nodes["relay"].outputs["result"] == f"got hi forge|forge|{workflow} !|forge|{workflow}"


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        ([dag("a", [task("x", "b")]), dag("b", [task("y", "a")])], "template recursion main -> a -> b -> a"),
        ([dag("a", [task("x", "main")])], "template recursion main -> a -> main"),
        ([dag("a", [task("x", "a")])], "template recursion main -> a -> a"),
        ([dag("a", [])], "dag 'a' has no tasks"),
        ([dag("a", [task("x", "nope")])], "dag 'a': task 'x': template 'nope' does not exist"),
    ],
)
async def test_invalid_nested_templates_are_rejected_at_create(
    engine: LocalWorkflowEngine, templates: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        await engine.create_template(workflow_template([task("start", "a")], templates))


async def test_unresolvable_nested_tags_fail_at_submit(engine: LocalWorkflowEngine) -> None:
    needs = dag("inner", [task("t", "ok")], inputs={"parameters": [{"name": "p"}]})
    await engine.create_template(workflow_template([task("g", "inner")], [needs, shell("ok", "true")], name="needs"))
    with pytest.raises(InvalidInputError, match=r"task 'g': inputs.parameters.p was not supplied"):
        await engine.submit("needs", parameters={}, labels={})
    # a nested DAG sees its own inputs and the workflow's tags, not its parent's task outputs
    leak = dag(
        "inner", [task("t", "echo", arguments={"parameters": [{"name": "v", "value": "{{tasks.a.outputs.result}}"}]})]
    )
    echo = shell("echo", "echo {{inputs.parameters.v}}", inputs={"parameters": [{"name": "v"}]})
    ok = shell("ok", "true")
    await engine.create_template(
        workflow_template([task("a", "ok"), task("g", "inner", depends="a")], [leak, echo, ok], name="leak")
    )
    with pytest.raises(InvalidInputError, match=r"failed to resolve \{\{tasks.a.outputs.result\}\}"):
        await engine.submit("leak", parameters={}, labels={})


async def test_parallelism_bounds_leaf_containers_only(tmp_path: Path) -> None:
    inner_log, outer_log, machine_log = tmp_path / "inner", tmp_path / "outer", tmp_path / "machine"

    def grouped(log: Path, name: str, **main_extra: Any) -> dict[str, Any]:
        templates = [
            logging_template(log, "sleep 0.2"),
            dag(
                "g",
                [
                    task(
                        f"t{i}",
                        "log",
                        arguments={"parameters": [{"name": "n", "value": f"{{{{inputs.parameters.p}}}}-{i}"}]},
                    )
                    for i in range(3)
                ],
                inputs={"parameters": [{"name": "p"}]},
            ),
        ]
        main = [task(p, "g", arguments={"parameters": [{"name": "p", "value": p}]}) for p in ("a", "b")]
        template = workflow_template(main, templates, name=name)
        template["spec"]["templates"][0].update(main_extra)
        return template

    async with LocalWorkflowEngine(max_parallel=2) as engine:
        # the nested template's parallelism bounds each of its DAG nodes: 2 DAGs x 1
        limited = grouped(inner_log, "inner")
        limited["spec"]["templates"][2]["parallelism"] = 1
        assert (await run(engine, limited)).phase == WorkflowPhase.SUCCEEDED
        assert max_concurrency(inner_log) == 2
        # main's parallelism 1 bounds every container beneath it; the two DAG nodes hold no slot
        assert (await run(engine, grouped(outer_log, "outer", parallelism=1))).phase == WorkflowPhase.SUCCEEDED
        assert max_concurrency(outer_log) == 1
        # the engine's max_parallel bounds the rest
        assert (await run(engine, grouped(machine_log, "machine"))).phase == WorkflowPhase.SUCCEEDED
        assert max_concurrency(machine_log) == 2
    assert len(events(outer_log)) == 12
    assert {n for kind, n in events(outer_log) if kind == "start"} == {f"{p}-{i}" for p in "ab" for i in range(3)}


# -- the template builder's output ---------------------------------------------------------------
RUN_ID = UUID("11111111-2222-3333-4444-555555555555")
GROUPS = {"check": 1, "build": 1, "test": 2, "package": 3}
# name -> (depends_on, {phase: [(step, timeout_seconds, retries)]})
PROJECTS: dict[str, tuple[Sequence[str], Mapping[str, Sequence[tuple[str, int, int]]]]] = {
    "greeting": ((), {"check": [("lint", 300, 0)], "test": [("unit", 120, 0)]}),
    "hello": (
        ("greeting",),
        {"check": [("lint", 300, 0), ("types", 300, 2)], "build": [("bundle", 600, 0)], "test": [("unit", 600, 1)]},
    ),
    "docs": ((), {"package": [("site", 60, 0)]}),
}


def discovery() -> DiscoveryResult:
    projects = []
    for name, (depends_on, steps) in sorted(PROJECTS.items()):
        discovered = [
            DiscoveredStep(phase=phase, name=step, action="run", target=f"make {step}", timeout_seconds=t, retries=r)
            for phase in sorted(steps, key=lambda p: (GROUPS[p], p))
            for step, t, r in steps[phase]
        ]
        projects.append(
            DiscoveredProject(
                name=name,
                path=f"p/{name}",
                config_blob="0" * 40,
                depends_on=sorted(depends_on),
                phases={phase: [s[0] for s in steps[phase]] for phase in steps},
                steps=discovered,
            )
        )
    by_group: dict[int, list[str]] = {}
    for phase in sorted({s.phase for p in projects for s in p.steps}):
        by_group.setdefault(GROUPS[phase], []).append(phase)
    return DiscoveryResult(
        commit="c0ffee" + "0" * 34,
        base=None,
        branch="main",
        repository="acme/mono",
        projects=projects,
        affected=[AffectedProject(project=n, reasons=["no base: all"]) for n in sorted(PROJECTS)],
        phase_groups=[PhaseGroup(group=g, phases=ps) for g, ps in sorted(by_group.items())],
    )


def forge_template(result: DiscoveryResult) -> dict[str, Any]:
    step_ids = {
        (s.phase, p.name, s.name): uuid5(RUN_ID, f"{s.phase}/{p.name}/{s.name}")
        for p in result.projects
        for s in p.steps
    }
    spec = TemplateSpec(
        run_id=RUN_ID,
        repository="acme/mono",
        commit_sha=result.commit,
        branch="main",
        clone_url="/srv/git/acme-mono.git",
        discovery=result,
        step_ids=step_ids,
    )
    return build_template(spec)


class Recorder:
    """A step runner recording each call's argv; exits 1 for the task of ``failing`` (phase, project, step)."""

    def __init__(self, failing: tuple[str, str, str] | None = None):
        self.calls: list[list[str]] = []
        self.failing = failing

    async def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        await asyncio.sleep(0.01)
        if self.key_of(argv) == self.failing:
            return 1, '{"success":false}', "lint failed"
        return 0, '{"success":true}', ""

    @staticmethod
    def key_of(argv: list[str]) -> tuple[str, str, str]:
        payload = json.loads(argv[argv.index("--payload") + 1])
        return payload["phase"], payload["project"], payload["step"]


async def test_the_built_template_runs_every_step_once_in_plan_order() -> None:
    result = discovery()
    groups = plan_tasks(result)
    planned = {t.key: t for g in groups for t in g.tasks}
    recorder = Recorder()
    async with LocalWorkflowEngine(step_runner=recorder) as engine:
        template = forge_template(result)
        assert any("dag" in t for t in template["spec"]["templates"] if t["name"].startswith("group-"))
        status = await run(engine, template)
    assert status.phase == WorkflowPhase.SUCCEEDED, status.message
    ran = [Recorder.key_of(argv) for argv in recorder.calls]
    assert sorted(ran) == sorted(planned)  # every leaf once
    position = {planned[k].name: i for i, k in enumerate(ran)}
    for group in groups:
        for t in group.tasks:
            assert all(position[d] < position[t.name] for d in t.depends), t.name
    for earlier, later in itertools.pairwise(groups):
        assert max(position[t.name] for t in earlier.tasks) < min(position[t.name] for t in later.tasks)
    expected_nodes = {f"group-{g.group}" for g in groups} | {t.name for t in planned.values()}
    assert set(status.nodes) == expected_nodes
    assert set(phases(status).values()) == {NodePhase.SUCCEEDED}
    for argv in recorder.calls:
        assert argv[0] == "dispatch"
        assert not any("{{" in a for a in argv), argv
        key = argv[argv.index("--key") + 1]
        assert key.endswith(".a0")
        assert argv[argv.index("--run-id") + 1] == str(RUN_ID)
        assert argv[argv.index("--repository") + 1] == "acme/mono"
        if planned[Recorder.key_of(argv)].step.retries:
            assert json.loads(argv[argv.index("--payload") + 1])["attempt"] == 0
    for t in planned.values():
        assert status.nodes[t.name].outputs == {"result": '{"success":true}', "exitCode": "0"}
        assert status.nodes[t.name].attempts == 1


async def test_a_failed_step_of_the_built_template_fails_the_run_and_omits_later_groups() -> None:
    result = discovery()
    groups = plan_tasks(result)
    failing = ("check", "greeting", "lint")
    recorder = Recorder(failing)
    async with LocalWorkflowEngine(step_runner=recorder) as engine:
        status = await run(engine, forge_template(result))
    names = {t.key: t.name for g in groups for t in g.tasks}
    bad = names[failing]
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == f"child 'group-1' failed: child '{bad}' failed: Error (exit code 1)"
    assert status.nodes[bad].phase == NodePhase.FAILED
    assert status.nodes[bad].outputs["exitCode"] == "1"
    assert status.nodes["group-1"].phase == NodePhase.FAILED
    ran = {Recorder.key_of(argv) for argv in recorder.calls}
    assert all(t.key not in ran for g in groups[1:] for t in g.tasks)
    for later in groups[1:]:
        assert status.nodes[f"group-{later.group}"].phase == NodePhase.OMITTED
        assert {status.nodes[t.name].phase for t in later.tasks} == {NodePhase.OMITTED}
    hello_lint = names[("check", "hello", "lint")]  # depends on greeting's lint: omitted
    assert status.nodes[hello_lint].phase == NodePhase.OMITTED
    assert ("check", "hello", "lint") not in ran

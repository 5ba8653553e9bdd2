"""LocalWorkflowEngine against real subprocesses (``sh -c``): Argo's DAG semantics on one machine.

Concurrency and ordering are observed through lines the tasks append to a file, never through
wall-clock durations.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest

from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.engine import NodePhase, WorkflowPhase
from forge.workflows.engine import LocalWorkflowEngine

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

DEADLINE = "Pod was active on the node longer than the specified deadline"


async def test_dependencies_order_tasks(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = [
        log_task("a"),
        log_task("b", dependencies=["a"]),
        log_task("c", depends="a"),
        log_task("d", depends="b && c"),
    ]
    status = await run(engine, workflow_template(tasks, [logging_template(log, "sleep 0.2")]))
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert status.message is None
    assert set(phases(status).values()) == {NodePhase.SUCCEEDED}
    order = events(log)
    assert order.index(("end", "a")) < order.index(("start", "b"))
    assert order.index(("end", "a")) < order.index(("start", "c"))
    assert order.index(("start", "d")) > max(order.index(("end", "b")), order.index(("end", "c")))
    node = status.nodes["d"]
    assert node.attempts == 1
    assert node.started_at is not None
    assert node.finished_at is not None
    assert node.started_at <= node.finished_at
    assert status.started_at is not None
    assert status.finished_at is not None


async def test_spec_parallelism_bounds_running_containers(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = [log_task(f"t{i}") for i in range(6)]
    status = await run(engine, workflow_template(tasks, [logging_template(log, "sleep 0.3")], parallelism=2))
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert len(events(log)) == 12
    assert max_concurrency(log) == 2


async def test_dag_template_parallelism_and_unbounded_run(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    bounded, free = tmp_path / "bounded", tmp_path / "free"
    tasks = [log_task(f"t{i}") for i in range(4)]
    template = workflow_template(tasks, [logging_template(bounded, "sleep 0.3")], dag=None, name="bounded")
    template["spec"]["templates"][0]["parallelism"] = 1
    assert (await run(engine, template)).phase == WorkflowPhase.SUCCEEDED
    assert max_concurrency(bounded) == 1
    # no limit: every task of the layer starts before the first one ends
    status = await run(engine, workflow_template(tasks, [logging_template(free, "sleep 1")], name="free"))
    assert status.phase == WorkflowPhase.SUCCEEDED
    assert max_concurrency(free) == 4


async def test_engine_max_parallel_bounds_across_workflows(tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = [log_task(f"t{i}") for i in range(3)]
    async with LocalWorkflowEngine(max_parallel=2) as engine:
        name = await engine.create_template(workflow_template(tasks, [logging_template(log, "sleep 0.2")]))
        runs = [await engine.submit(name, parameters={}, labels={}) for _ in range(2)]
        finals = [await final(engine, r) for r in runs]
    assert {f.phase for f in finals} == {WorkflowPhase.SUCCEEDED}
    assert max_concurrency(log) == 2


async def test_fail_fast_starts_nothing_new_and_omits_the_rest(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    # "slow" is running when "bad" fails: it finishes; "after" (waiting for slow) never starts
    tasks = [
        task("bad", "fail"),
        log_task("slow"),
        log_task("after", dependencies=["slow"]),
        log_task("child", dependencies=["bad"]),
    ]
    templates = [logging_template(log, "sleep 1"), shell("fail", "exit 3")]
    status = await run(engine, workflow_template(tasks, templates))
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "child 'bad' failed: Error (exit code 3)"
    assert phases(status) == {
        "bad": NodePhase.FAILED,
        "slow": NodePhase.SUCCEEDED,
        "after": NodePhase.OMITTED,
        "child": NodePhase.OMITTED,
    }
    assert status.nodes["bad"].outputs["exitCode"] == "3"
    assert status.nodes["after"].attempts == 0
    assert ("start", "after") not in events(log)


async def test_fail_fast_false_lets_independent_branches_run(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = [task("bad", "fail"), log_task("slow"), log_task("after", dependencies=["slow"])]
    templates = [logging_template(log, "sleep 0.3"), shell("fail", "exit 1")]
    status = await run(engine, workflow_template(tasks, templates, dag={"failFast": False}))
    assert status.phase == WorkflowPhase.FAILED
    assert phases(status)["after"] == NodePhase.SUCCEEDED


async def test_retries_with_backoff_count_attempts_and_substitute_retries(
    engine: LocalWorkflowEngine, tmp_path: Path
) -> None:
    tries = tmp_path / "tries"
    flaky = shell(
        "flaky",
        f"echo try {{{{retries}}}} >> {tries}; echo attempt-{{{{retries}}}}; [ {{{{retries}}}} -ge 2 ]",
        retryStrategy={"limit": "3", "retryPolicy": "OnFailure", "backoff": {"duration": "50ms", "factor": 2}},
    )
    always = shell("always", "exit 1", retryStrategy={"limit": 1, "backoff": {"duration": "0.01"}})
    on_error = shell("on-error", "exit 1", retryStrategy={"limit": 2, "retryPolicy": "OnError"})
    tasks = [task("flaky", "flaky"), task("always", "always"), task("on-error", "on-error")]
    status = await run(engine, workflow_template(tasks, [flaky, always, on_error], dag={"failFast": False}))
    assert tries.read_text().split("\n")[:-1] == ["try 0", "try 1", "try 2"]
    assert status.nodes["flaky"].phase == NodePhase.SUCCEEDED
    assert status.nodes["flaky"].attempts == 3
    assert status.nodes["flaky"].outputs["result"] == "attempt-2\n"
    assert status.nodes["always"].phase == NodePhase.FAILED
    assert status.nodes["always"].attempts == 2
    assert status.nodes["on-error"].attempts == 1  # a failure is not an error


async def test_retry_max_duration_stops_retrying(engine: LocalWorkflowEngine) -> None:
    t = shell("t", "exit 1", retryStrategy={"limit": 10, "backoff": {"duration": "30s", "maxDuration": "1s"}})
    status = await run(engine, workflow_template([task("t", "t")], [t]))
    assert status.nodes["t"].phase == NodePhase.FAILED
    assert status.nodes["t"].attempts == 1
    assert status.nodes["t"].message == "Max duration limit exceeded"


async def test_template_deadline_kills_the_container(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow = shell("slow", f"echo $$ > {pid_file}; exec sleep 30", activeDeadlineSeconds=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = await run(engine, workflow_template([task("slow", "slow"), task("next", "slow", depends="slow")], [slow]))
    assert loop.time() - started < 20  # far below the 30 s sleep
    assert status.phase == WorkflowPhase.FAILED
    assert status.nodes["slow"].phase == NodePhase.FAILED
    assert status.nodes["slow"].message == DEADLINE
    assert status.nodes["next"].phase == NodePhase.OMITTED
    assert not alive(int(pid_file.read_text()))


async def test_workflow_deadline_stops_everything(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow = shell("slow", f"echo $$ > {pid_file}; sleep 30")
    tasks = [task("slow", "slow"), task("next", "slow", dependencies=["slow"])]
    status = await run(engine, workflow_template(tasks, [slow], activeDeadlineSeconds=1))
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "Step exceeded its deadline"
    assert status.nodes["slow"].phase == NodePhase.FAILED
    assert status.nodes["slow"].message == "Step exceeded its deadline"
    assert status.nodes["next"].phase == NodePhase.SKIPPED
    assert not alive(int(pid_file.read_text()))


async def test_stop_kills_the_process_group_and_marks_nodes(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the shell ignores SIGTERM, so the group needs the SIGKILL after the grace period
    busy = shell("busy", f"trap '' TERM; sleep 30 & echo $! >> {pids}; echo $$ >> {pids}; wait")
    tasks = [task("busy", "busy"), task("next", "busy", dependencies=["busy"])]
    name = await engine.create_template(workflow_template(tasks, [busy]))
    workflow = await engine.submit(name, parameters={}, labels={})
    async with asyncio.timeout(10):
        while not pids.exists() or len(pids.read_text().split()) < 2:
            await asyncio.sleep(0.02)
    running = await engine.status(workflow)
    assert running.phase == WorkflowPhase.RUNNING
    assert running.nodes["busy"].phase == NodePhase.RUNNING
    assert running.nodes["next"].phase == NodePhase.PENDING
    await engine.stop(workflow, message="cancelled by alice")
    status = await engine.status(workflow)
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "cancelled by alice"
    assert status.nodes["busy"].phase == NodePhase.FAILED
    assert status.nodes["busy"].message == "cancelled by alice"
    assert status.nodes["next"].phase == NodePhase.SKIPPED
    assert [alive(int(p)) for p in pids.read_text().split()] == [False, False]
    await engine.stop(workflow, message="again")  # idempotent on a finished workflow
    assert (await engine.status(workflow)).message == "cancelled by alice"


async def test_forge_step_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    async def step_runner(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return (0 if argv[-1] != "bad" else 1), f"result of {argv[-1]}", "talk"

    async def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was spawned: {args}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    step = {
        "name": "dispatch",
        "inputs": {"parameters": [{"name": "key"}]},
        "container": {
            "image": "ghcr.io/input-output-hk/forge:1",
            "command": ["forge-step"],
            "args": ["dispatch", "--run-id", "{{workflow.parameters.run}}", "--key", "{{inputs.parameters.key}}"],
        },
    }
    tasks = [
        task("one", "dispatch", arguments={"parameters": [{"name": "key", "value": "k1"}]}),
        task("two", "dispatch", dependencies=["one"], arguments={"parameters": [{"name": "key", "value": "bad"}]}),
    ]
    template = workflow_template(tasks, [step], arguments={"parameters": [{"name": "run"}]})
    async with LocalWorkflowEngine(step_runner=step_runner) as engine:
        status = await run(engine, template, parameters={"run": "r-1"})
    assert calls == [["dispatch", "--run-id", "r-1", "--key", "k1"], ["dispatch", "--run-id", "r-1", "--key", "bad"]]
    assert status.nodes["one"].outputs == {"result": "result of k1", "exitCode": "0"}
    assert status.nodes["two"].phase == NodePhase.FAILED
    assert status.nodes["two"].message == "Error (exit code 1)"
    assert status.phase == WorkflowPhase.FAILED


async def test_forge_step_exception_is_an_error_and_cancellation_stops_it() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def step_runner(argv: list[str]) -> tuple[int, str, str]:
        if argv == ["boom"]:
            raise RuntimeError("bus is down")
        started.set()
        await release.wait()
        return 0, "", ""

    step = {
        "name": "s",
        "inputs": {"parameters": [{"name": "a"}]},
        "container": {"command": ["forge-step"], "args": ["{{inputs.parameters.a}}"]},
    }
    tasks = [
        task("boom", "s", arguments={"parameters": [{"name": "a", "value": "boom"}]}),
        task("wait", "s", arguments={"parameters": [{"name": "a", "value": "wait"}]}),
    ]
    async with LocalWorkflowEngine(step_runner=step_runner) as engine:
        name = await engine.create_template(workflow_template(tasks, [step], dag={"failFast": False}))
        workflow = await engine.submit(name, parameters={}, labels={})
        await started.wait()
        await engine.stop(workflow, message="stopped")
        status = await engine.status(workflow)
    assert status.nodes["boom"].phase == NodePhase.ERROR
    assert status.nodes["boom"].message == "forge-step raised RuntimeError: bus is down"
    assert status.nodes["wait"].phase == NodePhase.FAILED
    assert status.nodes["wait"].message == "stopped"


async def test_parameters_and_workflow_tags_are_substituted(engine: LocalWorkflowEngine) -> None:
    echo = shell(
        "echo",
        "printf '%s|%s|%s|%s' '{{inputs.parameters.greeting}}' '{{workflow.name}}' "
        "'{{workflow.labels.team}}' \"$EXTRA\"",
        inputs={"parameters": [{"name": "greeting"}, {"name": "unused", "default": "d"}]},
    )
    echo["container"]["env"] = [{"name": "EXTRA", "value": "{{workflow.parameters.who}}"}]
    relay = shell("relay", "printf 'got %s' '{{inputs.parameters.text}}'", inputs={"parameters": [{"name": "text"}]})
    tasks = [
        task(
            "hello", "echo", arguments={"parameters": [{"name": "greeting", "value": "hi {{workflow.parameters.who}}"}]}
        ),
        task(
            "relay",
            "relay",
            depends="hello.Succeeded",
            arguments={"parameters": [{"name": "text", "value": "{{tasks.hello.outputs.result}}"}]},
        ),
    ]
    template = workflow_template(
        tasks, [echo, relay], name="greet", arguments={"parameters": [{"name": "who", "value": "world"}]}
    )
    name = await engine.create_template(template)
    default = await final(engine, await engine.submit(name, parameters={}, labels={"team": "ci"}))
    workflow = await engine.submit(name, parameters={"who": "forge"}, labels={"team": "ci"})
    assert workflow.startswith("greet-")
    assert len(workflow) == len("greet-") + 5
    status = await final(engine, workflow)
    assert default.nodes["hello"].outputs["result"] == f"hi world|{default.name}|ci|world"
    assert status.nodes["hello"].outputs["result"] == f"hi forge|{workflow}|ci|forge"
    assert status.nodes["relay"].outputs["result"] == f"got hi forge|{workflow}|ci|forge"


async def test_depends_expressions_failed_branch_and_or(engine: LocalWorkflowEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = [
        task("a", "fail"),
        log_task("on-failure", depends="a.Failed"),
        log_task("on-success", depends="a"),
        log_task("either", depends="a.Succeeded || on-failure.Succeeded"),
        log_task("negated", depends="!a.Succeeded && (on-failure.Succeeded || on-failure.Skipped)"),
        log_task("omitted-seen", depends="on-success.Omitted"),
    ]
    status = await run(engine, workflow_template(tasks, [logging_template(log, "true"), shell("fail", "exit 1")]))
    assert phases(status) == {
        "a": NodePhase.FAILED,
        "on-failure": NodePhase.SUCCEEDED,
        "on-success": NodePhase.OMITTED,
        "either": NodePhase.SUCCEEDED,
        "negated": NodePhase.SUCCEEDED,
        "omitted-seen": NodePhase.SUCCEEDED,
    }
    assert status.nodes["on-success"].message == "omitted: depends condition not met"
    # the failure is handled by on-failure, so fail-fast does not stop the others; every leaf
    # branch succeeded (omitted-seen ran after the omitted on-success), so the workflow succeeds
    assert status.phase == WorkflowPhase.SUCCEEDED


async def test_omitted_leaf_inherits_the_failure(engine: LocalWorkflowEngine) -> None:
    tasks = [task("a", "fail"), task("handler", "ok", depends="a.Failed"), task("next", "ok", depends="a")]
    status = await run(engine, workflow_template(tasks, [shell("fail", "exit 1"), shell("ok", "true")]))
    assert phases(status) == {"a": NodePhase.FAILED, "handler": NodePhase.SUCCEEDED, "next": NodePhase.OMITTED}
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "child 'a' failed: Error (exit code 1)"


async def test_continue_on_failed(engine: LocalWorkflowEngine) -> None:
    tasks = [task("a", "fail", continueOn={"failed": True}), task("b", "ok", dependencies=["a"])]
    status = await run(engine, workflow_template(tasks, [shell("fail", "exit 1"), shell("ok", "true")]))
    assert phases(status) == {"a": NodePhase.FAILED, "b": NodePhase.SUCCEEDED}
    assert status.phase == WorkflowPhase.SUCCEEDED


async def test_a_command_that_cannot_start_is_an_error_node(engine: LocalWorkflowEngine) -> None:
    broken = workflow_template(
        [task("x", "x")], [{"name": "x", "container": {"command": ["/nonexistent/forge-x"]}}], name="b"
    )
    status = await run(engine, broken)
    assert status.nodes["x"].phase == NodePhase.ERROR
    assert "failed to start '/nonexistent/forge-x'" in (status.nodes["x"].message or "")
    assert status.phase == WorkflowPhase.ERROR


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["spec"]["templates"].append({"name": "py", "script": {"source": "x"}}), "is a 'script' template"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"].append(task("z", "py")), "template 'py' does not exist"),
        (
            lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="b and c"),
            "expected '&&', '||' or ')' before 'and'",
        ),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="b == c"), "unsupported syntax"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="b.Finished"), "'.Finished'"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="(b"), "missing ')'"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="nope"), "unknown task 'nope'"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="b", dependencies=["b"]), "both"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(depends="b"), "dependency cycle a -> b -> a"),
        (lambda t: t["spec"]["templates"][0]["dag"]["tasks"][0].update(withItems=[1]), "withItems"),
        (lambda t: t["spec"].update(entrypoint="ok"), "must name a dag template"),
        (lambda t: t["spec"].update(onExit="ok"), "spec.onExit"),
        (lambda t: t.pop("metadata"), "metadata.name is required"),
    ],
)
async def test_invalid_templates_are_rejected(engine: LocalWorkflowEngine, mutate: Any, message: str) -> None:
    template = workflow_template([task("a", "ok"), task("b", "ok", depends="a")], [shell("ok", "true")])
    mutate(template)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        await engine.create_template(template)


async def test_unresolvable_tags_and_missing_parameters_fail_at_submit(engine: LocalWorkflowEngine) -> None:
    bad_tag = workflow_template([task("a", "t")], [shell("t", "echo {{inputs.parameters.nope}}")], name="tag")
    await engine.create_template(bad_tag)
    with pytest.raises(InvalidInputError, match=r"failed to resolve \{\{inputs.parameters.nope\}\}"):
        await engine.submit("tag", parameters={}, labels={})
    needs = workflow_template(
        [task("a", "t")], [shell("t", "true")], name="needs", arguments={"parameters": [{"name": "rev"}]}
    )
    await engine.create_template(needs)
    with pytest.raises(InvalidInputError, match=r"spec.arguments.parameters.rev.value is required"):
        await engine.submit("needs", parameters={}, labels={})
    missing_input = shell("t", "echo {{inputs.parameters.x}}", inputs={"parameters": [{"name": "x"}]})
    await engine.create_template(workflow_template([task("a", "t")], [missing_input], name="input"))
    with pytest.raises(InvalidInputError, match=r"task 'a': inputs.parameters.x was not supplied"):
        await engine.submit("input", parameters={}, labels={})


async def test_create_is_idempotent_and_conflicts_on_other_content(engine: LocalWorkflowEngine) -> None:
    template = workflow_template([task("a", "ok")], [shell("ok", "true")], name="same")
    assert await engine.create_template(template) == "same"
    assert await engine.create_template(template) == "same"
    changed = workflow_template([task("a", "ok")], [shell("ok", "false")], name="same")
    with pytest.raises(ConflictError, match="different content"):
        await engine.create_template(changed)
    with pytest.raises(NotFoundError):
        await engine.submit("missing", parameters={}, labels={})
    with pytest.raises(NotFoundError):
        await engine.status("missing-abcde")
    with pytest.raises(NotFoundError):
        await engine.stop("missing-abcde", message="x")


async def test_watch_yields_changes_and_ends_with_the_final_status(engine: LocalWorkflowEngine) -> None:
    tasks = [task("a", "ok"), task("b", "ok", dependencies=["a"])]
    name = await engine.create_template(workflow_template(tasks, [shell("ok", "sleep 0.1")]))
    workflow = await engine.submit(name, parameters={}, labels={})
    async with asyncio.timeout(30):
        seen = [s async for s in engine.watch(workflow)]
    assert seen[-1].phase == WorkflowPhase.SUCCEEDED
    assert all(not s.phase.is_final for s in seen[:-1])
    assert any(s.nodes["a"].phase == NodePhase.RUNNING for s in seen)
    assert all(a != b for a, b in itertools.pairwise(seen))
    assert seen[-1] == await engine.status(workflow)
    # watching a finished workflow yields its final status once
    assert [s async for s in engine.watch(workflow)] == [seen[-1]]


async def test_closing_the_engine_kills_running_workflows(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    engine = LocalWorkflowEngine(kill_grace=1.0)
    name = await engine.create_template(
        workflow_template([task("a", "slow")], [shell("slow", f"echo $$ > {pid_file}; exec sleep 30")])
    )
    workflow = await engine.submit(name, parameters={}, labels={})
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
    await engine.aclose()
    status = await engine.status(workflow)
    assert status.phase == WorkflowPhase.FAILED
    assert status.nodes["a"].phase == NodePhase.FAILED
    assert not alive(int(pid_file.read_text()))
    with pytest.raises(InvalidInputError):
        await engine.submit(name, parameters={}, labels={})
    assert os.getpgid(os.getpid())  # this test process was never in the killed group

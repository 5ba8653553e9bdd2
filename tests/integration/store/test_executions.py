"""Phases, tasks and steps of a run on real PostgreSQL: creation, roll-up, finishing, cancelling, claiming."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.entities import PipelineRun
from forge.domain.status import Status
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import NewRun, RunExecutions


def sha(n: int) -> str:
    return f"{n:040x}"


def _step(phase: str, name: str, target: str = "+test") -> DiscoveredStep:
    return DiscoveredStep(phase=phase, name=name, action="earthly", target=target, timeout_seconds=60)


def discovery(commit: str = sha(1)) -> DiscoveryResult:
    """api: test (unit, lint) + build (image); web: test (unit); docs has steps but is not affected."""
    api = DiscoveredProject(
        name="api",
        path="services/api",
        config_blob="0" * 40,
        phases={"test": ["unit", "lint"], "build": ["image"]},
        steps=[_step("test", "unit"), _step("test", "lint", "+lint"), _step("build", "image", "+image")],
    )
    web = DiscoveredProject(
        name="web", path="web", config_blob="1" * 40, phases={"test": ["unit"]}, steps=[_step("test", "unit")]
    )
    docs = DiscoveredProject(
        name="docs", path="docs", config_blob="2" * 40, phases={"test": ["x"]}, steps=[_step("test", "x")]
    )
    return DiscoveryResult(
        commit=commit,
        base=None,
        projects=[api, web, docs],
        affected=[AffectedProject(project="api", reasons=["changed"]), AffectedProject(project="web", reasons=["x"])],
        phase_groups=[PhaseGroup(group=1, phases=["test"]), PhaseGroup(group=2, phases=["build"])],
    )


async def discovered_runs(store: PostgresStore, repo: str, count: int = 1) -> list[PipelineRun]:
    """Runs whose discovery succeeded (status running), as the controller leaves them."""
    made = [(await store.create_run(NewRun(repository=repo, commit_sha=sha(100 + i))))[0] for i in range(count)]
    claimed = await store.claim_discovery(limit=count)
    assert {r.id for r in claimed} == {r.id for r in made}
    done = []
    for run in made:
        found = discovery(run.commit_sha)
        done.append(await store.record_discovery(run.id, found.model_dump(mode="json"), f"d/{run.id}.json"))
    return done


async def executing(store: PostgresStore, repo: str) -> tuple[PipelineRun, RunExecutions]:
    [run] = await discovered_runs(store, repo)
    return run, await store.create_executions(run.id, discovery(run.commit_sha))


def statuses(ex: RunExecutions) -> dict[str, Status]:
    """``phase``, ``phase/project`` and ``phase/project/step`` -> status."""
    out: dict[str, Status] = {}
    for phase in ex.phases:
        out[phase.name] = phase.status
        for task in ex.tasks_of(phase.id):
            out[f"{phase.name}/{task.project}"] = task.status
            for step in ex.steps_of(task.id):
                out[f"{phase.name}/{task.project}/{step.name}"] = step.status
    return out


async def test_create_executions_from_discovery_is_idempotent(store: PostgresStore, repo: str) -> None:
    [run] = await discovered_runs(store, repo)
    found = discovery(run.commit_sha)
    results = await asyncio.gather(*(store.create_executions(run.id, found) for _ in range(4)))
    first = results[0]
    assert all(r == first for r in results)
    assert await store.get_executions(run.id) == first

    assert [(p.name, p.group, p.status) for p in first.phases] == [
        ("test", 1, Status.PENDING),
        ("build", 2, Status.PENDING),
    ]
    assert [(t.project, t.project_path) for t in first.tasks] == [
        ("api", "services/api"),
        ("web", "web"),
        ("api", "services/api"),
    ]
    assert [(s.name, s.action, s.target, s.status, s.attempts) for s in first.steps] == [
        ("unit", "earthly", "+test", Status.PENDING, 0),  # declared order within a task
        ("lint", "earthly", "+lint", Status.PENDING, 0),
        ("unit", "earthly", "+test", Status.PENDING, 0),
        ("image", "earthly", "+image", Status.PENDING, 0),
    ]
    assert "test/docs" not in statuses(first)  # not affected
    lint = first.step("test", "api", "lint")
    assert first.step_id("test", "api", "lint") == lint.id
    assert first.step_ids() == {
        ("test", "api", "unit"): first.steps[0].id,
        ("test", "api", "lint"): lint.id,
        ("test", "web", "unit"): first.steps[2].id,
        ("build", "api", "image"): first.steps[3].id,
    }
    assert await store.get_step(lint.id) == lint
    phase, task, step = first.find_step(lint.id) or pytest.fail("lint not found")
    assert (phase.name, task.project, step.name) == ("test", "api", "lint")
    assert first.find_step(uuid4()) is None
    with pytest.raises(NotFoundError, match="no step 'x' of project 'docs'"):
        first.step_id("test", "docs", "x")
    assert first.detail(lint.id).started_at is None


async def test_create_executions_errors(store: PostgresStore, repo: str) -> None:
    with pytest.raises(NotFoundError):
        await store.create_executions(uuid4(), discovery())
    [run] = await discovered_runs(store, repo)
    broken = discovery().model_copy(update={"phase_groups": [PhaseGroup(group=1, phases=["test"])]})
    with pytest.raises(InvalidInputError, match="phase 'build' of project 'api' is in no phase group"):
        await store.create_executions(run.id, broken)
    assert (await store.get_executions(run.id)).phases == []  # nothing half-written
    with pytest.raises(NotFoundError):
        await store.get_executions(uuid4())
    with pytest.raises(NotFoundError):
        await store.get_step(uuid4())


async def test_steps_roll_up_into_tasks_and_phases(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    web = ex.step_id("test", "web", "unit")

    started = await store.set_step_status(unit, Status.RUNNING, attempt=1, logs_key="logs/unit.log")
    assert (started.status, started.attempts, started.logs_key) == (Status.RUNNING, 1, "logs/unit.log")
    now = statuses(await store.get_executions(run.id))
    assert (now["test"], now["test/api"], now["test/web"], now["build"]) == (
        Status.RUNNING,
        Status.RUNNING,
        Status.PENDING,
        Status.PENDING,
    )

    done = await store.set_step_status(unit, Status.SUCCESS, exit_code=0, message="ok")
    assert (done.exit_code, done.attempts, done.logs_key) == (0, 1, "logs/unit.log")  # kept
    assert statuses(await store.get_executions(run.id))["test/api"] == Status.RUNNING  # lint still pending

    await store.set_step_status(lint, Status.RUNNING)
    await store.set_step_status(lint, Status.SUCCESS, exit_code=0)
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api"], now["test"]) == (Status.SUCCESS, Status.RUNNING)  # web still pending

    await store.set_step_status(web, Status.RUNNING)
    await store.set_step_status(web, Status.SUCCESS, exit_code=0)
    ex = await store.get_executions(run.id)
    now = statuses(ex)
    assert (now["test/web"], now["test"], now["build"]) == (Status.SUCCESS, Status.SUCCESS, Status.PENDING)

    test_phase = ex.phases[0]
    detail = ex.detail(test_phase.id)
    assert detail.started_at is not None
    assert detail.completed_at is not None
    assert detail.started_at <= detail.completed_at
    step_detail = ex.detail(unit)
    assert step_detail.message == "ok"
    assert step_detail.started_at is not None
    assert step_detail.completed_at is not None
    assert ex.step("test", "api", "lint").attempts == 1  # counted when it started
    assert (await store.get_run(run.id)).status == Status.RUNNING  # the run is the controller's business


async def test_a_failed_step_fails_task_and_phase_at_once(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, web = ex.step_id("test", "api", "unit"), ex.step_id("test", "web", "unit")
    await store.set_step_status(web, Status.RUNNING)
    await store.set_step_status(unit, Status.RUNNING)
    await store.set_step_status(unit, Status.FAILED, exit_code=2)
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api/unit"], now["test/api"], now["test"]) == (Status.FAILED, Status.FAILED, Status.FAILED)
    assert now["test/web/unit"] == Status.RUNNING
    await store.set_step_status(web, Status.SUCCESS, exit_code=0)  # late news is still recorded
    now = statuses(await store.get_executions(run.id))
    assert (now["test/web"], now["test"]) == (Status.SUCCESS, Status.FAILED)  # final never changes


async def test_illegal_step_transitions_conflict(store: PostgresStore, repo: str) -> None:
    _, ex = await executing(store, repo)
    unit = ex.step_id("test", "api", "unit")
    with pytest.raises(ConflictError, match="cannot go from pending to success"):
        await store.set_step_status(unit, Status.SUCCESS)
    await store.set_step_status(unit, Status.RUNNING, attempt=1)
    again = await store.set_step_status(unit, Status.RUNNING, attempt=2)  # a retry: same status, new attempt
    assert again.attempts == 2
    await store.set_step_status(unit, Status.FAILED, exit_code=1)
    with pytest.raises(ConflictError, match="cannot go from failed to running"):
        await store.set_step_status(unit, Status.RUNNING)
    repeat = await store.set_step_status(unit, Status.FAILED, exit_code=3)
    assert repeat.exit_code == 3
    with pytest.raises(NotFoundError):
        await store.set_step_status(uuid4(), Status.RUNNING)
    with pytest.raises(InvalidInputError):
        await store.set_step_status(unit, Status.FAILED, attempt=-1)


async def test_sibling_steps_racing_roll_up_consistently(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    ids = [s.id for s in ex.steps]
    await asyncio.gather(*(store.set_step_status(i, Status.RUNNING) for i in ids))
    await asyncio.gather(*(store.set_step_status(i, Status.SUCCESS, exit_code=0) for i in ids))
    assert set(statuses(await store.get_executions(run.id)).values()) == {Status.SUCCESS}


async def test_set_task_and_phase_status(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    build_task = ex.tasks[2]
    task = await store.set_task_status(build_task.id, Status.RUNNING)
    assert task.status == Status.RUNNING
    assert statuses(await store.get_executions(run.id))["build"] == Status.RUNNING  # rolled up
    assert (await store.set_task_status(build_task.id, Status.RUNNING)) == task  # repeat
    with pytest.raises(ConflictError, match="cannot go from running to pending"):
        await store.set_task_status(build_task.id, Status.PENDING)
    phase = await store.set_phase_status(ex.phases[0].id, Status.SKIPPED)
    assert phase.status == Status.SKIPPED
    with pytest.raises(ConflictError):
        await store.set_phase_status(ex.phases[0].id, Status.RUNNING)
    with pytest.raises(NotFoundError):
        await store.set_task_status(uuid4(), Status.RUNNING)
    with pytest.raises(NotFoundError):
        await store.set_phase_status(uuid4(), Status.RUNNING)


async def test_finish_run_failed_settles_every_step(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    await store.set_step_status(unit, Status.RUNNING)
    await store.set_step_status(unit, Status.FAILED, exit_code=1)
    await store.set_step_status(lint, Status.RUNNING)

    finished = await store.finish_run(run.id, Status.FAILED, error="unit failed")
    assert (finished.status, finished.error) == (Status.FAILED, "unit failed")
    assert finished.completed_at is not None
    now = statuses(await store.get_executions(run.id))
    assert now == {
        "test": Status.FAILED,
        "test/api": Status.FAILED,
        "test/api/unit": Status.FAILED,
        "test/api/lint": Status.CANCELLED,  # was running
        "test/web": Status.SKIPPED,
        "test/web/unit": Status.SKIPPED,  # was pending
        "build": Status.SKIPPED,
        "build/api": Status.SKIPPED,
        "build/api/image": Status.SKIPPED,
    }
    assert await store.finish_run(run.id, Status.FAILED) == finished  # idempotent
    with pytest.raises(ConflictError, match="is already failed"):
        await store.finish_run(run.id, Status.SUCCESS)
    with pytest.raises(ConflictError, match="cannot go from skipped to running"):
        await store.set_step_status(ex.step_id("build", "api", "image"), Status.RUNNING)
    with pytest.raises(InvalidInputError):
        await store.finish_run(run.id, Status.SKIPPED)


async def test_finish_run_success(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    for step in ex.steps:
        await store.set_step_status(step.id, Status.RUNNING)
        await store.set_step_status(step.id, Status.SUCCESS, exit_code=0)
    finished = await store.finish_run(run.id, Status.SUCCESS)
    assert finished.status == Status.SUCCESS
    assert set(statuses(await store.get_executions(run.id)).values()) == {Status.SUCCESS}


async def test_cancel_request_then_finish_cancelled(store: PostgresStore, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    await store.set_step_status(unit, Status.RUNNING)

    asked = await store.request_cancel(run.id)
    assert asked.status == Status.RUNNING
    assert await store.request_cancel(run.id) == asked  # idempotent
    assert [r.id for r in await store.runs_cancel_requested()] == [run.id]
    with pytest.raises(ConflictError, match="is being cancelled"):
        await store.set_step_status(lint, Status.RUNNING)  # no new work once cancel is asked
    await store.set_step_status(unit, Status.RUNNING, attempt=2)  # running steps still report

    cancelled = await store.finish_run(run.id, Status.CANCELLED)
    assert cancelled.status == Status.CANCELLED
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api/unit"], now["test/api/lint"], now["test/api"], now["test"], now["build"]) == (
        Status.CANCELLED,
        Status.SKIPPED,
        Status.CANCELLED,
        Status.CANCELLED,
        Status.SKIPPED,
    )
    assert await store.runs_cancel_requested() == []
    with pytest.raises(ConflictError, match="is already cancelled"):
        await store.request_cancel(run.id)
    with pytest.raises(NotFoundError):
        await store.request_cancel(uuid4())


async def test_cancel_a_pending_run(store: PostgresStore, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(9)))
    await store.request_cancel(run.id)
    cancelled = await store.finish_run(run.id, Status.CANCELLED)
    assert (cancelled.status, cancelled.started_at) == (Status.CANCELLED, None)
    assert cancelled.completed_at is not None


async def test_set_run_status_enforces_transitions(store: PostgresStore, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(9)))
    with pytest.raises(ConflictError, match="cannot go from pending to success"):
        await store.set_run_status(run.id, Status.SUCCESS)
    running = await store.set_run_status(run.id, Status.RUNNING)
    assert running.started_at is not None
    assert await store.set_run_status(run.id, Status.RUNNING) == running
    failed = await store.set_run_status(run.id, Status.FAILED, error="boom")
    assert (failed.status, failed.error, failed.started_at) == (Status.FAILED, "boom", running.started_at)
    assert failed.completed_at is not None
    with pytest.raises(ConflictError):
        await store.set_run_status(run.id, Status.RUNNING)
    with pytest.raises(NotFoundError):
        await store.set_run_status(uuid4(), Status.RUNNING)


async def test_claim_execution_hands_each_run_to_one_claimer(store: PostgresStore, repo: str) -> None:
    runs = await discovered_runs(store, repo, count=6)
    pending, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))  # discovery not done
    first, second = await asyncio.gather(store.claim_execution(limit=4), store.claim_execution(limit=4))
    a, b = {r.id for r in first}, {r.id for r in second}
    assert not a & b
    assert a | b == {r.id for r in runs}
    assert pending.id not in a | b
    assert await store.claim_execution(limit=10) == []

    await asyncio.sleep(0.05)  # a claimer that died before recording a workflow: claimable again when stale
    stale = await store.claim_execution(limit=10, stale_after=0.01)
    assert {r.id for r in stale} == {r.id for r in runs}

    run = runs[0]
    named = await store.set_workflow(run.id, "forge-run-abc")
    assert named.workflow_name == "forge-run-abc"
    assert await store.set_workflow(run.id, "forge-run-abc") == named
    with pytest.raises(ConflictError, match="already has workflow"):
        await store.set_workflow(run.id, "forge-run-other")
    with pytest.raises(ConflictError, match="already has workflow"):
        await store.set_workflow(run.id, "forge-run-other", replaces="forge-run-not-current")
    replaced = await store.set_workflow(run.id, "forge-run-again", replaces="forge-run-abc")
    assert replaced.workflow_name == "forge-run-again"
    named = await store.set_workflow(run.id, "forge-run-abc", replaces="forge-run-again")
    assert [r.id for r in await store.runs_executing()] == [run.id]
    await asyncio.sleep(0.05)
    again = await store.claim_execution(limit=10, stale_after=0.01)
    assert run.id not in {r.id for r in again}  # has a workflow

    await store.request_cancel(runs[1].id)
    await asyncio.sleep(0.05)
    assert runs[1].id not in {r.id for r in await store.claim_execution(limit=10, stale_after=0.01)}

    await store.finish_run(run.id, Status.SUCCESS)
    assert await store.runs_executing() == []
    assert await store.set_workflow(run.id, "forge-run-abc") == await store.get_run(run.id)  # repeat after the end
    await store.finish_run(runs[2].id, Status.CANCELLED)
    with pytest.raises(ConflictError, match="is already cancelled"):
        await store.set_workflow(runs[2].id, "late")
    with pytest.raises(InvalidInputError):
        await store.claim_execution(limit=0)


def test_find_step_in_empty_executions() -> None:
    empty = RunExecutions(run_id=UUID(int=1), phases=[], tasks=[], steps=[])
    assert empty.find_step(UUID(int=2)) is None
    assert empty.detail(UUID(int=2)).message is None

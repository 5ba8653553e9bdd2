"""Phases, tasks and steps of a run on every store adapter: creation, step events and their roll-up, failing a
step, finishing, cancelling, claiming."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest

from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.entities import PipelineRun
from forge.domain.events import EventKind, StepEvent
from forge.domain.rollup import rollup
from forge.domain.status import Status
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import ExecutionDetail, NewRun, RunExecutions

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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


async def discovered_runs(store: Store, repo: str, count: int = 1) -> list[PipelineRun]:
    """Runs whose discovery succeeded (status running), as the controller leaves them."""
    made = [(await store.create_run(NewRun(repository=repo, commit_sha=sha(100 + i))))[0] for i in range(count)]
    claimed = await store.claim_discovery(limit=count)
    assert {r.id for r in claimed} == {r.id for r in made}
    done = []
    for run in made:
        found = discovery(run.commit_sha)
        done.append(await store.record_discovery(run.id, found, f"d/{run.id}.json"))
    return done


async def executing(store: Store, repo: str) -> tuple[PipelineRun, RunExecutions]:
    [run] = await discovered_runs(store, repo)
    return run, await store.create_executions(run.id, discovery(run.commit_sha))


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(
    run: PipelineRun,
    step_id: UUID,
    kind: EventKind,
    attempt: int = 1,
    *,
    exit_code: int | None = None,
    logs_key: str | None = None,
    message: str | None = None,
    at: datetime | None = None,
    started_at: datetime | None = None,
) -> StepEvent:
    """What a worker publishes about attempt ``attempt`` of a step of ``run``."""
    return StepEvent(
        run_id=run.id,
        step_id=step_id,
        attempt=attempt,
        kind=kind,
        exit_code=exit_code,
        logs_key=logs_key,
        message=message,
        at=at or datetime.now(UTC),
        started_at=started_at,
    )


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


async def test_create_executions_from_discovery_is_idempotent(store: Store, repo: str) -> None:
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


async def test_create_executions_errors(store: Store, repo: str) -> None:
    with pytest.raises(NotFoundError):
        await store.create_executions(uuid4(), discovery())
    [run] = await discovered_runs(store, repo)
    broken = discovery().model_copy(update={"phase_groups": [PhaseGroup(group=1, phases=["test"])]})
    with pytest.raises(InvalidInputError, match="phase 'build' of project 'api' is in no phase group"):
        await store.create_executions(run.id, broken)
    assert (await store.get_executions(run.id)).phases == []  # nothing half-written
    api = discovery().projects[0]
    twice = api.model_copy(update={"steps": [*api.steps, api.steps[0]]})
    repeated = discovery().model_copy(update={"projects": [twice, *discovery().projects[1:]]})
    with pytest.raises(InvalidInputError, match="two steps named 'unit' in phase 'test'"):
        await store.create_executions(run.id, repeated)
    assert (await store.get_executions(run.id)).phases == []
    with pytest.raises(NotFoundError):
        await store.get_executions(uuid4())
    with pytest.raises(NotFoundError):
        await store.get_step(uuid4())


async def test_steps_roll_up_into_tasks_and_phases(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    web = ex.step_id("test", "web", "unit")

    assert await store.apply_step_events([event(run, unit, "started", logs_key="logs/unit.log", at=at(1))]) == 1
    started = await store.get_step(unit)
    assert (started.status, started.attempts, started.logs_key) == (Status.RUNNING, 1, "logs/unit.log")
    now = statuses(await store.get_executions(run.id))
    assert (now["test"], now["test/api"], now["test/web"], now["build"]) == (
        Status.RUNNING,
        Status.RUNNING,
        Status.PENDING,
        Status.PENDING,
    )

    assert await store.apply_step_events([event(run, unit, "success", exit_code=0, message="ok", at=at(5))]) == 1
    done = await store.get_step(unit)
    assert (done.status, done.exit_code, done.attempts, done.logs_key) == (Status.SUCCESS, 0, 1, "logs/unit.log")
    assert statuses(await store.get_executions(run.id))["test/api"] == Status.RUNNING  # lint still pending

    await store.apply_step_events([event(run, lint, "started")])
    await store.apply_step_events([event(run, lint, "success", exit_code=0)])
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api"], now["test"]) == (Status.SUCCESS, Status.RUNNING)  # web still pending

    await store.apply_step_events([event(run, web, "started")])
    await store.apply_step_events([event(run, web, "success", exit_code=0)])
    ex = await store.get_executions(run.id)
    now = statuses(ex)
    assert (now["test/web"], now["test"], now["build"]) == (Status.SUCCESS, Status.SUCCESS, Status.PENDING)

    test_phase = ex.phases[0]
    detail = ex.detail(test_phase.id)
    assert detail.started_at is not None
    assert detail.completed_at is not None
    assert detail.started_at <= detail.completed_at
    assert ex.detail(ex.tasks[0].id).completed_at is not None
    assert ex.detail(ex.phases[1].id) == ExecutionDetail()  # build never started
    assert ex.detail(unit) == ExecutionDetail(started_at=at(1), completed_at=at(5), message="ok")  # the events' times
    assert ex.step("test", "api", "lint").attempts == 1  # counted when it started
    assert (await store.get_run(run.id)).status == Status.RUNNING  # the run is the controller's business


async def test_a_failed_step_fails_task_and_phase_at_once(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, web = ex.step_id("test", "api", "unit"), ex.step_id("test", "web", "unit")
    assert await store.apply_step_events([event(run, web, "started"), event(run, unit, "started")]) == 2
    assert await store.apply_step_events([event(run, unit, "failed", exit_code=2)]) == 1
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api/unit"], now["test/api"], now["test"]) == (Status.FAILED, Status.FAILED, Status.FAILED)
    assert (now["test/web/unit"], now["test/api/lint"], now["build"]) == (
        Status.RUNNING,
        Status.PENDING,
        Status.PENDING,
    )

    assert await store.apply_step_events([event(run, web, "success", exit_code=0)]) == 1  # late news is recorded
    now = statuses(await store.get_executions(run.id))
    assert (now["test/web"], now["test"]) == (Status.SUCCESS, Status.FAILED)  # final never changes
    assert await store.apply_step_events([event(run, unit, "started", 2), event(run, unit, "success", 2)]) == 0
    failed = await store.get_step(unit)
    assert (failed.status, failed.exit_code, failed.attempts) == (Status.FAILED, 2, 1)


async def test_a_batch_spans_steps_of_two_runs_and_applies_in_order(store: Store, repo: str) -> None:
    a, b = await discovered_runs(store, repo, count=2)
    ex_a = await store.create_executions(a.id, discovery(a.commit_sha))
    ex_b = await store.create_executions(b.id, discovery(b.commit_sha))
    a_unit, a_lint = ex_a.step_id("test", "api", "unit"), ex_a.step_id("test", "api", "lint")
    b_unit, b_web = ex_b.step_id("test", "api", "unit"), ex_b.step_id("test", "web", "unit")
    batch = [
        event(a, a_unit, "started", at=at(1)),
        event(b, b_unit, "started", at=at(1)),
        event(a, a_unit, "success", exit_code=0, at=at(2)),  # the same step, later in the same batch
        event(b, b_unit, "retrying", exit_code=3, at=at(3)),
        event(b, b_web, "success", exit_code=0, logs_key="logs/web", message="short", started_at=at(4), at=at(7)),
        event(b, b_unit, "started", 2, at=at(5)),
        event(a, a_lint, "failed", exit_code=1, at=at(8)),  # no started_at: it began when it ended
    ]
    assert await store.apply_step_events(batch) == 4  # steps changed, not events applied

    now_a, now_b = await store.get_executions(a.id), await store.get_executions(b.id)
    assert statuses(now_a) == {
        "test": Status.FAILED,
        "test/api": Status.FAILED,
        "test/api/unit": Status.SUCCESS,
        "test/api/lint": Status.FAILED,
        "test/web": Status.PENDING,
        "test/web/unit": Status.PENDING,
        "build": Status.PENDING,
        "build/api": Status.PENDING,
        "build/api/image": Status.PENDING,
    }
    assert now_a.detail(a_unit) == ExecutionDetail(started_at=at(1), completed_at=at(2))
    assert now_a.detail(a_lint) == ExecutionDetail(started_at=at(8), completed_at=at(8))
    assert (now_a.step("test", "api", "lint").attempts, now_a.step("test", "api", "lint").exit_code) == (1, 1)

    web = now_b.step("test", "web", "unit")  # a final event of a pending step applies whole
    assert (web.status, web.attempts, web.exit_code, web.logs_key) == (Status.SUCCESS, 1, 0, "logs/web")
    assert now_b.detail(b_web) == ExecutionDetail(started_at=at(4), completed_at=at(7), message="short")
    unit = now_b.step("test", "api", "unit")
    assert (unit.status, unit.attempts, unit.exit_code) == (Status.RUNNING, 2, None)
    assert now_b.detail(b_unit).started_at == at(1)  # when the step first started
    now = statuses(now_b)
    assert (now["test/web"], now["test/api"], now["test"]) == (Status.SUCCESS, Status.RUNNING, Status.RUNNING)

    assert await store.apply_step_events(batch) == 0  # the same batch again changes nothing
    assert await store.get_executions(a.id) == now_a
    assert await store.get_executions(b.id) == now_b


async def test_events_apply_in_the_order_given(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit = ex.step_id("test", "api", "unit")
    assert await store.apply_step_events([event(run, unit, "success", exit_code=0), event(run, unit, "started")]) == 1
    assert (await store.get_step(unit)).status == Status.SUCCESS  # the started after it came too late


async def test_duplicate_and_stale_events_change_nothing(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit = ex.step_id("test", "api", "unit")
    first = [event(run, unit, "started", at=at(1))]
    assert await store.apply_step_events(first) == 1
    assert await store.apply_step_events(first) == 0  # a duplicate
    assert await store.apply_step_events([event(run, unit, "started", at=at(9))]) == 0  # a redelivery, later
    assert await store.apply_step_events([event(run, unit, "started", 2, at=at(2))]) == 1
    before = await store.get_executions(run.id)
    stale = [
        event(run, unit, "started"),
        event(run, unit, "retrying", exit_code=9, message="old"),
        event(run, unit, "failed", exit_code=9),
    ]
    assert await store.apply_step_events(stale) == 0  # attempt 1 is over: attempt 2 runs
    assert await store.get_executions(run.id) == before
    step = await store.get_step(unit)
    assert (step.status, step.attempts, step.exit_code) == (Status.RUNNING, 2, None)

    failed = [event(run, unit, "failed", 2, exit_code=1, message="boom", at=at(3))]
    assert await store.apply_step_events(failed) == 1
    after = await store.get_executions(run.id)
    assert await store.apply_step_events(failed) == 0
    late = [
        event(run, unit, "started", 3),
        event(run, unit, "retrying", 3, exit_code=4),
        event(run, unit, "success", 3, exit_code=0),
        event(run, unit, "failed", 2, exit_code=5, message="other"),
    ]
    assert await store.apply_step_events(late) == 0  # final never changes, not even its exit code
    assert await store.get_executions(run.id) == after
    step = await store.get_step(unit)
    assert (step.status, step.attempts, step.exit_code) == (Status.FAILED, 2, 1)
    assert after.detail(unit) == ExecutionDetail(started_at=at(1), completed_at=at(3), message="boom")


async def test_events_of_unknown_steps_are_skipped(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit = ex.step_id("test", "api", "unit")
    assert await store.apply_step_events([]) == 0
    assert await store.apply_step_events([event(run, uuid4(), "started")]) == 0
    batch = [
        event(run, uuid4(), "started"),
        event(run, unit, "started"),
        StepEvent(run_id=uuid4(), step_id=uuid4(), attempt=1, kind="success"),  # not even its run exists
    ]
    assert await store.apply_step_events(batch) == 1
    assert (await store.get_step(unit)).status == Status.RUNNING
    assert statuses(await store.get_executions(run.id))["test/api"] == Status.RUNNING


async def test_retrying_keeps_the_step_running(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    await store.apply_step_events([event(run, unit, "started", at=at(1))])
    retry = [event(run, unit, "retrying", exit_code=2, message="exit 2, retrying", at=at(2))]
    assert await store.apply_step_events(retry) == 1
    ex = await store.get_executions(run.id)
    step = ex.step("test", "api", "unit")
    assert (step.status, step.attempts, step.exit_code) == (Status.RUNNING, 1, 2)
    assert ex.detail(unit) == ExecutionDetail(started_at=at(1), completed_at=None, message="exit 2, retrying")
    assert statuses(ex)["test/api"] == Status.RUNNING
    assert await store.apply_step_events(retry) == 0

    assert await store.apply_step_events([event(run, unit, "started", 2, at=at(3))]) == 1
    step = await store.get_step(unit)
    assert (step.status, step.attempts, step.exit_code) == (Status.RUNNING, 2, None)  # the old exit code is gone
    assert await store.apply_step_events([event(run, unit, "success", 2, exit_code=0, at=at(4))]) == 1
    ex = await store.get_executions(run.id)
    step = ex.step("test", "api", "unit")
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 2, 0)
    assert (ex.detail(unit).started_at, ex.detail(unit).completed_at) == (at(1), at(4))

    assert await store.apply_step_events([event(run, lint, "retrying", exit_code=5, at=at(6))]) == 1  # no started seen
    ex = await store.get_executions(run.id)
    step = ex.step("test", "api", "lint")
    assert (step.status, step.attempts, step.exit_code) == (Status.RUNNING, 1, 5)
    assert (ex.detail(lint).started_at, ex.detail(lint).completed_at) == (at(6), None)


async def test_fail_step(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    web, image = ex.step_id("test", "web", "unit"), ex.step_id("build", "api", "image")
    await store.apply_step_events([event(run, unit, "started", logs_key="logs/unit", at=at(1))])

    failed = await store.fail_step(unit, "dispatcher timed out")
    assert (failed.status, failed.attempts, failed.logs_key) == (Status.FAILED, 1, "logs/unit")
    ex = await store.get_executions(run.id)
    detail = ex.detail(unit)
    assert (detail.started_at, detail.message) == (at(1), "dispatcher timed out")
    assert detail.completed_at is not None
    now = statuses(ex)
    assert (now["test/api"], now["test"], now["test/web"]) == (Status.FAILED, Status.FAILED, Status.PENDING)
    assert await store.fail_step(unit, "again") == failed  # idempotent
    assert (await store.get_executions(run.id)).detail(unit).message == "dispatcher timed out"
    assert await store.apply_step_events([event(run, unit, "success", exit_code=0)]) == 0  # news too late

    pending = await store.fail_step(web, None)  # never started
    assert (pending.status, pending.attempts) == (Status.FAILED, 0)
    ex = await store.get_executions(run.id)
    assert ex.detail(web).message is None
    assert ex.detail(web).completed_at is not None
    assert statuses(ex)["test/web"] == Status.FAILED

    await store.apply_step_events([event(run, lint, "started"), event(run, lint, "success", exit_code=0)])
    succeeded = await store.get_step(lint)
    assert await store.fail_step(lint, "too late") == succeeded  # final: unchanged
    assert statuses(await store.get_executions(run.id))["build/api/image"] == Status.PENDING
    assert (await store.get_step(image)).status == Status.PENDING
    with pytest.raises(NotFoundError):
        await store.fail_step(uuid4(), "x")


async def test_sibling_steps_racing_roll_up_consistently(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    ids = [s.id for s in ex.steps]
    assert await asyncio.gather(*(store.apply_step_events([event(run, i, "started")]) for i in ids)) == [1] * 4
    done = await asyncio.gather(*(store.apply_step_events([event(run, i, "success", exit_code=0)]) for i in ids))
    assert done == [1] * 4
    assert set(statuses(await store.get_executions(run.id)).values()) == {Status.SUCCESS}


async def test_concurrent_batches_and_finish_run_never_deadlock(store: Store, repo: str) -> None:
    runs = await discovered_runs(store, repo, count=10)
    for position, (a, b) in enumerate(zip(runs[::2], runs[1::2], strict=True)):
        ex_a = await store.create_executions(a.id, discovery(a.commit_sha))
        ex_b = await store.create_executions(b.id, discovery(b.commit_sha))
        steps = [(a, s.id) for s in ex_a.steps] + [(b, s.id) for s in ex_b.steps]
        starts = [event(r, s, "started") for r, s in steps]
        ends = [
            event(r, s, "failed", exit_code=1) if n == 1 else event(r, s, "success", exit_code=0)
            for n, (r, s) in enumerate(steps)
        ]
        batches = [
            starts,
            starts[::-1],
            *([end] for end in ends),
            [e for pair in zip(starts, ends, strict=True) for e in pair],
            ends[::-1],
        ]
        writes: list[Coroutine[Any, Any, object]] = [store.apply_step_events(batch) for batch in batches]
        where = position * len(writes) // 4  # the runs end first, last, or between batches
        writes[where:where] = [
            store.finish_run(a.id, Status.FAILED, error="lint failed", code="step_failed"),
            store.finish_run(b.id, Status.CANCELLED),
        ]
        await asyncio.gather(*writes)
        finished_a, finished_b = await store.get_run(a.id), await store.get_run(b.id)
        assert (finished_a.status, finished_a.error, finished_a.error_code) == (
            Status.FAILED,
            "lint failed",
            "step_failed",
        )
        assert (finished_b.status, finished_b.error_code) == (Status.CANCELLED, None)
        for run_id in (a.id, b.id):
            assert_consistent(await store.get_executions(run_id))


def assert_consistent(ex: RunExecutions) -> None:
    """Everything final, each step as its events or the end of the run left it, parents rolled up."""
    for step in ex.steps:
        assert step.status.is_final, step
        assert ex.detail(step.id).completed_at is not None
        expected = {
            Status.SUCCESS: (0, 1),
            Status.FAILED: (1, 1),
            Status.CANCELLED: (None, 1),  # started, then the run ended
            Status.SKIPPED: (None, 0),  # pending when the run ended
        }[step.status]
        assert (step.exit_code, step.attempts) == expected, step
    for task in ex.tasks:
        assert task.status == rollup(s.status for s in ex.steps_of(task.id)), (task, ex.steps_of(task.id))
    for phase in ex.phases:
        assert phase.status == rollup(t.status for t in ex.tasks_of(phase.id)), (phase, ex.tasks_of(phase.id))


async def test_finish_run_failed_settles_every_step(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    image = ex.step_id("build", "api", "image")
    await store.apply_step_events(
        [event(run, unit, "started"), event(run, unit, "failed", exit_code=1), event(run, lint, "started")]
    )

    finished = await store.finish_run(run.id, Status.FAILED, error="unit failed", code="step_failed")
    assert (finished.status, finished.error, finished.error_code) == (Status.FAILED, "unit failed", "step_failed")
    assert finished.completed_at is not None
    assert await store.get_run(run.id) == finished
    ex = await store.get_executions(run.id)
    assert statuses(ex) == {
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
    assert ex.detail(lint).completed_at is not None
    assert ex.step("test", "api", "unit").exit_code == 1
    assert await store.finish_run(run.id, Status.FAILED) == finished  # idempotent
    with pytest.raises(ConflictError, match="is already failed"):
        await store.finish_run(run.id, Status.SUCCESS)
    late = [event(run, image, "started"), event(run, lint, "success", exit_code=0)]
    assert await store.apply_step_events(late) == 0  # a finished run's steps are final
    assert await store.get_executions(run.id) == ex
    with pytest.raises(InvalidInputError):
        await store.finish_run(run.id, Status.SKIPPED)
    with pytest.raises(NotFoundError):
        await store.finish_run(uuid4(), Status.FAILED)


async def test_finish_run_success(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    batch = [event(run, s.id, kind, exit_code=0) for s in ex.steps for kind in ("started", "success")]
    assert await store.apply_step_events(batch) == 4
    finished = await store.finish_run(run.id, Status.SUCCESS)
    assert (finished.status, finished.error, finished.error_code) == (Status.SUCCESS, None, None)
    assert set(statuses(await store.get_executions(run.id)).values()) == {Status.SUCCESS}


async def test_cancel_request_then_finish_cancelled(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit = ex.step_id("test", "api", "unit")
    await store.apply_step_events([event(run, unit, "started")])

    asked = await store.request_cancel(run.id)
    assert asked.status == Status.RUNNING
    assert asked.cancel_requested_at is not None
    assert await store.request_cancel(run.id) == asked  # idempotent
    assert [r.id for r in await store.runs_cancel_requested()] == [run.id]
    assert await store.apply_step_events([event(run, unit, "started", 2)]) == 1  # running steps still report

    cancelled = await store.finish_run(run.id, Status.CANCELLED, error="cancelled by request", code="cancelled")
    assert (cancelled.status, cancelled.error, cancelled.error_code) == (
        Status.CANCELLED,
        "cancelled by request",
        "cancelled",
    )
    now = statuses(await store.get_executions(run.id))
    assert (now["test/api/unit"], now["test/api/lint"], now["test/api"], now["test"], now["build"]) == (
        Status.CANCELLED,
        Status.SKIPPED,
        Status.CANCELLED,
        Status.CANCELLED,
        Status.SKIPPED,
    )
    assert (await store.get_step(unit)).attempts == 2
    assert await store.runs_cancel_requested() == []
    with pytest.raises(ConflictError, match="is already cancelled"):
        await store.request_cancel(run.id)
    with pytest.raises(NotFoundError):
        await store.request_cancel(uuid4())


async def test_cancel_a_pending_run(store: Store, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(9)))
    with pytest.raises(ConflictError, match="cannot go from pending to success"):
        await store.finish_run(run.id, Status.SUCCESS)  # nothing ran
    await store.request_cancel(run.id)
    cancelled = await store.finish_run(run.id, Status.CANCELLED)
    assert (cancelled.status, cancelled.started_at, cancelled.error_code) == (Status.CANCELLED, None, None)
    assert cancelled.completed_at is not None
    assert cancelled.discovery_status == Status.SKIPPED


async def test_claim_execution_hands_each_run_to_one_claimer(store: Store, repo: str) -> None:
    runs = await discovered_runs(store, repo, count=6)
    pending, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))  # discovery not done
    first, second = await asyncio.gather(
        store.claim_execution(limit=4, claimer="a", lease=30), store.claim_execution(limit=4, claimer="b", lease=30)
    )
    a, b = {r.id for r in first}, {r.id for r in second}
    assert not a & b
    assert a | b == {r.id for r in runs}
    assert pending.id not in a | b
    assert await store.claim_execution(limit=10, claimer="c", lease=30) == []

    await asyncio.sleep(0.05)  # a claimer that died before recording a workflow: claimable again when stale
    stale = await store.claim_execution(limit=10, claimer="c", lease=0.01)
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
    again = await store.claim_execution(limit=10, claimer="c", lease=0.01)
    assert run.id not in {r.id for r in again}  # has a workflow

    await store.request_cancel(runs[1].id)
    await asyncio.sleep(0.05)
    assert runs[1].id not in {r.id for r in await store.claim_execution(limit=10, claimer="c", lease=0.01)}

    await store.finish_run(run.id, Status.SUCCESS)
    assert await store.runs_executing() == []
    assert await store.set_workflow(run.id, "forge-run-abc") == await store.get_run(run.id)  # repeat after the end
    await store.finish_run(runs[2].id, Status.CANCELLED)
    with pytest.raises(ConflictError, match="is already cancelled"):
        await store.set_workflow(runs[2].id, "late")
    with pytest.raises(InvalidInputError):
        await store.claim_execution(limit=0, claimer="c", lease=30)


def test_find_step_in_empty_executions() -> None:
    empty = RunExecutions(run_id=UUID(int=1), phases=[], tasks=[], steps=[])
    assert empty.find_step(UUID(int=2)) is None
    assert empty.detail(UUID(int=2)).message is None

"""Run changes on every store adapter: each write that changes a status of a run, phase, task or step records
one change per changed entity in its transaction (what ``GET /v1/runs/{id}/events`` streams), ids grow in
commit order, a repeat records nothing, and the feed wakes a listener of the run once the write is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from forge.adapters.postgres_changes import PostgresChangeFeed
from forge.adapters.postgres_store import PostgresStore
from forge.domain.status import Status
from forge.errors import InvalidInputError, NotFoundError
from forge.ports.changes import ChangeFeed, Wakeups
from forge.ports.fakes import MemoryChangeFeed, MemoryStore
from forge.ports.store import NewRepository, NewRun, RunChange

from .test_executions import discovered_runs, discovery, event, executing, sha

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store


async def changes(store: Store, run_id: UUID, after: int = 0) -> list[RunChange]:
    return await store.changes_since(run_id, after, limit=1000)


def brief(found: list[RunChange]) -> list[tuple[str, str]]:
    return [(c.kind, str(c.status)) for c in found]


def newest(found: list[RunChange]) -> int:
    return found[-1].id if found else 0


async def test_a_run_is_created_pending_and_moved_through_discovery(store: Store, repo: str) -> None:
    run, created = await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))
    assert created
    [first] = await changes(store, run.id)
    assert (first.run_id, first.kind, first.entity_id, first.status) == (run.id, "run", run.id, Status.PENDING)
    assert first.body == {
        "status": "pending",
        "discovery_status": "pending",
        "error": None,
        "error_code": None,
        "workflow_name": None,
        "cancel_requested_at": None,
        "started_at": None,
        "completed_at": None,
    }
    assert first.at.tzinfo is not None
    await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))  # a repeat changes nothing
    assert len(await changes(store, run.id)) == 1

    [claimed] = await store.claim_discovery(limit=5)
    [second] = await changes(store, run.id, first.id)
    assert second.id > first.id
    assert (second.status, second.body["discovery_status"]) == (Status.RUNNING, "running")
    assert second.body["started_at"] == claimed.started_at.isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]

    await store.record_discovery(run.id, discovery(run.commit_sha), "d/1.json")
    await store.record_discovery(run.id, discovery(run.commit_sha), "d/1.json")  # repeat
    [third] = await changes(store, run.id, second.id)
    assert (third.status, third.body["discovery_status"]) == (Status.RUNNING, "success")
    assert "discovery" not in third.body  # small: a watcher reads the run for it

    await store.set_workflow(run.id, "wf-1")
    await store.set_workflow(run.id, "wf-1")
    await store.request_cancel(run.id)
    await store.request_cancel(run.id)
    fourth, fifth = await changes(store, run.id, third.id)
    assert fourth.body["workflow_name"] == "wf-1"
    assert fifth.body["cancel_requested_at"] is not None
    assert fourth.id < fifth.id


async def test_a_failed_discovery_is_one_change(store: Store, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(2)))
    await store.claim_discovery(limit=1)
    await store.fail_discovery(run.id, "bad forge.yaml", code="invalid_config")
    await store.fail_discovery(run.id, "bad forge.yaml", code="invalid_config")
    found = await changes(store, run.id)
    assert brief(found) == [("run", "pending"), ("run", "running"), ("run", "failed")]
    body = found[-1].body
    assert (body["discovery_status"], body["error"], body["error_code"]) == (
        "failed",
        "bad forge.yaml",
        "invalid_config",
    )
    assert body["completed_at"] is not None


async def test_planned_executions_are_announced_parents_first(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    before = await changes(store, run.id)
    created = before[-(len(ex.phases) + len(ex.tasks) + len(ex.steps)) :]
    await store.create_executions(run.id, discovery(run.commit_sha))  # a repeat announces nothing
    assert await changes(store, run.id) == before
    assert [(c.kind, c.entity_id) for c in created] == [
        *(("phase", p.id) for p in ex.phases),
        *(("task", t.id) for t in ex.tasks),
        *(("step", s.id) for s in ex.steps),
    ]
    assert {c.status for c in created} == {Status.PENDING}
    test = ex.phases[0]
    assert created[0].body == {
        "status": "pending",
        "started_at": None,
        "completed_at": None,
        "name": "test",
        "group": 1,
    }
    api = ex.tasks[0]
    assert created[2].body == {
        "status": "pending",
        "started_at": None,
        "completed_at": None,
        "phase_id": str(test.id),
        "project": "api",
        "project_path": "services/api",
    }
    lint = ex.step("test", "api", "lint")
    assert next(c for c in created if c.entity_id == lint.id).body == {
        "status": "pending",
        "exit_code": None,
        "attempts": 0,
        "logs_key": None,
        "message": None,
        "started_at": None,
        "completed_at": None,
        "task_id": str(api.id),
        "name": "lint",
        "action": "earthly",
        "target": "+lint",
        "position": 1,
    }


async def test_step_events_record_the_steps_and_what_rolled_up(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    unit, lint = ex.step_id("test", "api", "unit"), ex.step_id("test", "api", "lint")
    task, phase = ex.tasks[0].id, ex.phases[0].id
    mark = newest(await changes(store, run.id))
    t1 = datetime(2026, 1, 1, 12, 0, 1, 250000, tzinfo=UTC)

    await store.apply_step_events([event(run, unit, "started", logs_key="logs/unit.log", at=t1)])
    found = await changes(store, run.id, mark)
    assert [(c.kind, c.entity_id, str(c.status)) for c in found] == [
        ("step", unit, "running"),
        ("task", task, "running"),
        ("phase", phase, "running"),
    ]
    assert found[0].body == {
        "status": "running",
        "exit_code": None,
        "attempts": 1,
        "logs_key": "logs/unit.log",
        "message": None,
        "started_at": "2026-01-01T12:00:01.250000Z",
        "completed_at": None,
    }
    assert found[1].body["started_at"] is not None
    assert found[1].body["completed_at"] is None
    assert len({c.id for c in found}) == 3
    assert [c.id for c in found] == sorted(c.id for c in found)
    mark = newest(found)

    # a batch: two steps change, the task only once; a repeated event changes nothing
    batch = [
        event(run, unit, "started"),
        event(run, unit, "success", exit_code=0, message="ok", at=t1 + timedelta(seconds=2)),
        event(run, lint, "failed", exit_code=3, at=t1 + timedelta(seconds=3)),
    ]
    assert await store.apply_step_events(batch) == 2
    found = await changes(store, run.id, mark)
    assert [(c.kind, c.entity_id, str(c.status)) for c in found] == [
        ("step", unit, "success"),
        ("step", lint, "failed"),
        ("task", task, "failed"),
        ("phase", phase, "failed"),
    ]
    assert (found[0].body["exit_code"], found[0].body["message"]) == (0, "ok")
    assert found[0].body["completed_at"] == "2026-01-01T12:00:03.250000Z"
    assert found[2].body["completed_at"] is not None
    assert await store.apply_step_events(batch) == 0
    assert await changes(store, run.id, newest(found)) == []


async def test_a_failed_step_and_a_finished_run_record_every_sweep(store: Store, repo: str) -> None:
    run, ex = await executing(store, repo)
    web, image = ex.step_id("test", "web", "unit"), ex.step_id("build", "api", "image")
    unit = ex.step_id("test", "api", "unit")
    await store.apply_step_events([event(run, unit, "started")])
    mark = newest(await changes(store, run.id))

    await store.fail_step(web, "the dispatcher timed out")
    await store.fail_step(web, "again")  # already final: nothing
    found = await changes(store, run.id, mark)
    assert [(c.kind, c.entity_id, str(c.status)) for c in found] == [
        ("step", web, "failed"),
        ("task", ex.tasks[1].id, "failed"),
        ("phase", ex.phases[0].id, "failed"),
    ]
    assert found[0].body["message"] == "the dispatcher timed out"
    mark = newest(found)

    finished = await store.finish_run(run.id, Status.FAILED, error="step failed", code="step_failed")
    await store.finish_run(run.id, Status.FAILED)  # a repeat records nothing
    found = await changes(store, run.id, mark)
    steps = {c.entity_id: str(c.status) for c in found if c.kind == "step"}
    assert steps == {unit: "cancelled", ex.step_id("test", "api", "lint"): "skipped", image: "skipped"}
    assert {(c.entity_id, str(c.status)) for c in found if c.kind == "task"} == {
        (ex.tasks[0].id, "cancelled"),
        (ex.tasks[2].id, "skipped"),
    }
    assert {(c.entity_id, str(c.status)) for c in found if c.kind == "phase"} == {(ex.phases[1].id, "skipped")}
    kinds = [c.kind for c in found]
    assert kinds == sorted(kinds, key=["step", "task", "phase", "run"].index)  # the run's end comes last
    last = found[-1]
    assert (last.kind, last.status, last.body["error_code"]) == ("run", Status.FAILED, "step_failed")
    assert last.body["completed_at"] == finished.completed_at.isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
    snapshot = await store.run_snapshot(run.id)
    assert snapshot.last_change == last.id
    assert snapshot.run == finished
    assert snapshot.executions == await store.get_executions(run.id)


async def test_a_run_ending_before_its_discovery_did(store: Store, repo: str) -> None:
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(3)))
    await store.claim_discovery(limit=1)
    await store.finish_run(run.id, Status.CANCELLED, code="cancelled")
    last = (await changes(store, run.id))[-1]
    assert (last.status, last.body["discovery_status"]) == (Status.CANCELLED, "cancelled")


async def test_changes_page_by_id_and_runs_keep_their_own(store: Store, repo: str) -> None:
    one, two = await discovered_runs(store, repo, 2)
    a, b = await changes(store, one.id), await changes(store, two.id)
    assert brief(a) == brief(b) == [("run", "pending"), ("run", "running"), ("run", "running")]
    assert {c.run_id for c in a} == {one.id}
    every = sorted([*a, *b], key=lambda c: c.id)
    assert len({c.id for c in every}) == 6
    assert await store.changes_since(one.id, a[0].id, limit=1) == [a[1]]
    assert await store.changes_since(one.id, a[-1].id, limit=10) == []
    assert await store.changes_since(uuid4(), 0, limit=10) == []
    with pytest.raises(InvalidInputError):
        await store.changes_since(one.id, 0, limit=0)
    snapshot = await store.run_snapshot(one.id)
    assert (snapshot.run, snapshot.last_change, snapshot.executions.phases) == (one, a[-1].id, [])
    with pytest.raises(NotFoundError):
        await store.run_snapshot(uuid4())


async def test_concurrent_writers_of_one_run_commit_their_changes_in_id_order(store: Store, repo: str) -> None:
    """A watcher that read up to id N never finds a smaller id later: a run's writers take turns."""
    run, ex = await executing(store, repo)
    mark = newest(await changes(store, run.id))
    seen: list[int] = []

    async def watch(stop: asyncio.Event) -> None:
        after = mark
        while not stop.is_set() or after < newest(await changes(store, run.id)):
            found = await changes(store, run.id, after)
            assert all(c.id > after for c in found)
            seen.extend(c.id for c in found)
            after = newest(found) or after
            await asyncio.sleep(0)

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stop))
    await asyncio.gather(
        *(store.apply_step_events([event(run, s.id, "started")]) for s in ex.steps),
        store.fail_step(ex.steps[0].id, "gone"),
    )
    await store.finish_run(run.id, Status.FAILED)
    stop.set()
    await watcher
    assert seen == [c.id for c in await changes(store, run.id, mark)]


# -- the feed ----------------------------------------------------------------------------------------


async def next_wakeup(wakeups: Wakeups, timeout: float = 5.0) -> UUID:
    async with asyncio.timeout(timeout):
        return await anext(wakeups)


async def no_wakeup(wakeups: Wakeups, within: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await next_wakeup(wakeups, within)


async def heard_so_far(feed: ChangeFeed, notify: Callable[[UUID], Awaitable[None]]) -> None:
    """Return once ``feed`` heard every notice committed so far: it hears them in commit order, so once
    the notice of a fresh id sent now is heard, every earlier one was."""
    fence = uuid4()
    async with feed.listen(fence) as fenced:
        await notify(fence)
        assert await next_wakeup(fenced) == fence


async def check_feed(
    feed: ChangeFeed, store: Store, repo: str, notify: Callable[[UUID], Awaitable[None]] | None = None
) -> None:
    """``notify`` (a feed whose notices come later than the commit) NOTIFYs a run id like the store does:
    the notices of the runs' set-up are all heard before listening starts (a feed hears its notices in
    commit order, so once a fresh id's is heard, every earlier one was)."""
    one, two = await discovered_runs(store, repo, 2)
    if notify is not None:
        await heard_so_far(feed, notify)
    async with feed.listen(one.id) as wakeups, feed.listen(one.id, two.id) as both:
        await store.set_workflow(one.id, "wf")
        assert await next_wakeup(wakeups) == one.id
        assert await next_wakeup(both) == one.id
        await store.set_workflow(two.id, "wf")
        assert await next_wakeup(both) == two.id
        await no_wakeup(wakeups)  # not its run
        heard = getattr(feed, "notices", None)  # PostgreSQL's feed counts the notices it got
        await store.request_cancel(one.id)
        await store.request_cancel(one.id)  # nothing changed: no notice
        await store.finish_run(one.id, Status.CANCELLED)
        if heard is not None:  # both notices in (the memory feed wakes at commit, in this task)
            async with asyncio.timeout(5):
                while feed.notices < heard + 2:  # type: ignore[attr-defined]
                    await asyncio.sleep(0.01)
        assert await next_wakeup(wakeups) == one.id  # unread wake-ups coalesce
        await no_wakeup(wakeups)


async def test_memory_feed_wakes_listeners_of_a_run() -> None:
    store = MemoryStore()
    await store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    feed = MemoryChangeFeed(store)
    await check_feed(feed, store, "acme/app")
    run, _ = await store.create_run(NewRun(repository="acme/app", commit_sha=sha(9)))
    async with feed.listen(run.id) as wakeups:
        feed.lose_notices()
        assert await next_wakeup(wakeups) == run.id
    await feed.close()


@pytest.fixture
async def pg_feed(dsn: str, pg_store: PostgresStore) -> AsyncIterator[PostgresChangeFeed]:
    async with PostgresChangeFeed.open(dsn, retry_max=0.2) as feed:
        yield feed


async def test_postgres_feed_wakes_on_commit_and_after_a_lost_connection(
    pg_feed: PostgresChangeFeed, pg_store: PostgresStore, pg_repo: str, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:

        async def notify(run_id: UUID) -> None:
            await conn.execute("SELECT pg_notify('run_changes', $1)", str(run_id))

        await check_feed(pg_feed, pg_store, pg_repo, notify)
        run, _ = await pg_store.create_run(NewRun(repository=pg_repo, commit_sha=sha(9)))
        await heard_so_far(pg_feed, notify)  # the run's creation is not heard below
        async with pg_feed.listen(run.id) as wakeups:
            async with conn.transaction():  # nothing is heard before COMMIT
                await conn.execute("SELECT pg_notify('run_changes', $1)", str(run.id))
                await no_wakeup(wakeups)
            assert await next_wakeup(wakeups) == run.id
            killed = await conn.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
            assert killed
            assert await next_wakeup(wakeups) == run.id  # woken: notices may have been lost
            async with asyncio.timeout(5):
                while not pg_feed.connected:
                    await asyncio.sleep(0.05)
            heard = pg_feed.notices
            await pg_store.set_workflow(run.id, "wf")
            async with asyncio.timeout(5):
                while pg_feed.notices == heard:  # listening again
                    await asyncio.sleep(0.05)
            assert await next_wakeup(wakeups) == run.id
    finally:
        await conn.close()


# -- pruning -------------------------------------------------------------------------------------------


async def test_memory_prunes_changes_of_runs_finished_a_day_ago() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = MemoryStore(clock=lambda: now[0])
    await store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    await check_prune(store, "acme/app", lambda hours: now.__setitem__(0, now[0] + timedelta(hours=hours)))


async def test_postgres_prunes_changes_of_runs_finished_a_day_ago(
    pg_store: PostgresStore, pg_repo: str, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)

    async def age(hours: float) -> None:  # everything so far happened ``hours`` earlier
        await conn.execute("UPDATE run_changes SET at = at - make_interval(hours => $1)", hours)
        await conn.execute("UPDATE pipeline_runs SET completed_at = completed_at - make_interval(hours => $1)", hours)

    try:
        await check_prune(pg_store, pg_repo, age)
    finally:
        await conn.close()


async def check_prune(store: Any, repo: str, advance: Any) -> None:
    old, running, recent, later = [
        (await store.create_run(NewRun(repository=repo, commit_sha=sha(40 + i))))[0] for i in range(4)
    ]
    await store.finish_run(old.id, Status.CANCELLED)
    result = advance(23)
    if asyncio.iscoroutine(result):
        await result
    await store.finish_run(recent.id, Status.CANCELLED)
    assert len(await changes(store, old.id)) == 2  # 23 h: kept
    result = advance(2)
    if asyncio.iscoroutine(result):
        await result
    await store.finish_run(later.id, Status.CANCELLED)
    assert await changes(store, old.id) == []  # finished 25 h ago
    assert len(await changes(store, recent.id)) == 2
    assert len(await changes(store, running.id)) == 1  # unfinished: kept however old
    assert len(await changes(store, later.id)) == 2

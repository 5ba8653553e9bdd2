"""The executions document's version moves with every write of the store that changes a byte of it, and
only then (issue 12). On PostgreSQL the version is the run's newest change (``run_heads``), so this is
also the proof that every such write records a change: each field a step, task or phase shows is
changed alone, through the real store, and the version, the body and the run's newest change id are
checked after each write. PostgreSQL also checks the rows themselves: whenever any phase, task or step
row of the run was rewritten (its ``xmin`` moved), the head moved too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.entities import PipelineRun
from forge.domain.status import Status
from forge.errors import NotFoundError, ServiceUnavailableError
from forge.ports.store import JsonDocument, RunExecutions

from .test_executions import at, discovered_runs, discovery, event
from .test_json_reads import executions_reference

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store

PAGE = {"limit": 1000, "offset": 0}


@dataclass(frozen=True)
class Write:
    """One write of the scenario and what it must change in the document."""

    label: str
    run: Callable[[], Awaitable[Any]]
    #: Per step (``phase/project/step``), the fields it must show changed; every other step unchanged.
    steps: dict[str, set[str]] = field(default_factory=dict)
    #: Phases and tasks (``phase``, ``phase/project``) whose status must have changed.
    nodes: set[str] = field(default_factory=set)
    changes: bool = True
    created: bool = False


def scenario(store: Store, run: PipelineRun, ex: list[RunExecutions]) -> list[Write]:
    """Writes that change each field of a step alone where the store allows it, the roll-ups, the sweep
    of ``finish_run``, and repeats that change nothing. ``ex`` holds the executions once created."""

    def step(phase: str, project: str, name: str) -> UUID:
        return ex[0].step_id(phase, project, name)

    unit = "test/api/unit"

    async def events(*made: Any) -> None:
        await store.apply_step_events(list(made))

    async def create() -> None:
        ex.append(await store.create_executions(run.id, discovery(run.commit_sha)))

    def u() -> UUID:
        return step("test", "api", "unit")

    return [
        Write("create the executions", create, created=True),
        Write("create them again", create, changes=False),
        Write(
            "unit started (attempt 1, a log key)",
            lambda: events(event(run, u(), "started", logs_key="logs/1.log", at=at(1))),
            {unit: {"status", "attempts", "logs_key", "started_at"}},
            {"test", "test/api"},
        ),
        Write(
            "the same start again",
            lambda: events(event(run, u(), "started", logs_key="logs/1.log", at=at(2))),
            changes=False,
        ),
        Write(
            "attempt 1 failed, Argo retries: an exit code and a message, the status stays running",
            lambda: events(event(run, u(), "retrying", exit_code=1, message="flaky", at=at(3))),
            {unit: {"exit_code", "message"}},
        ),
        Write(
            "attempt 2 started: attempts and a new log key; the exit code of attempt 1 is forgotten",
            lambda: events(event(run, u(), "started", 2, logs_key="logs/2.log", at=at(4))),
            {unit: {"attempts", "logs_key", "exit_code"}},
        ),
        Write(
            "the message alone",
            lambda: events(event(run, u(), "retrying", 2, message="flaky again", at=at(5))),
            {unit: {"message"}},
        ),
        Write(
            "the exit code alone",
            lambda: events(event(run, u(), "retrying", 2, exit_code=7, at=at(6))),
            {unit: {"exit_code"}},
        ),
        Write(
            "the log key alone",
            lambda: events(event(run, u(), "retrying", 2, logs_key="logs/2b.log", at=at(7))),
            {unit: {"logs_key"}},
        ),
        Write(
            "unit succeeded: status, exit code, completed_at",
            lambda: events(event(run, u(), "success", 2, exit_code=0, at=at(8))),
            {unit: {"status", "exit_code", "completed_at"}},
        ),
        Write(
            "a late copy of attempt 1", lambda: events(event(run, u(), "failed", exit_code=9, at=at(9))), changes=False
        ),
        Write(
            "lint failed by the controller: status, message, both times; its task and phase fail",
            lambda: store.fail_step(step("test", "api", "lint"), "out of memory"),
            {"test/api/lint": {"status", "message", "started_at", "completed_at"}},
            {"test", "test/api"},
        ),
        Write("failed again", lambda: store.fail_step(step("test", "api", "lint"), "again"), changes=False),
        Write(
            "web's unit started with its own start time",
            lambda: events(event(run, step("test", "web", "unit"), "started", at=at(10), started_at=at(-5))),
            {"test/web/unit": {"status", "attempts", "started_at"}},
            {"test/web"},
        ),
        Write(
            "the run fails: the rest is swept, everything settles",
            lambda: store.finish_run(run.id, Status.FAILED),
            {"test/web/unit": {"status", "completed_at"}, "build/api/image": {"status", "completed_at"}},
            {"test/web", "build", "build/api"},
        ),
        Write("finished again", lambda: store.finish_run(run.id, Status.FAILED), changes=False),
    ]


def flatten(document: JsonDocument) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Steps by ``phase/project/step`` and phases and tasks by ``phase`` / ``phase/project``."""
    steps: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for phase in json.loads(document.body)["phases"]:
        nodes[phase["name"]] = phase
        for task in phase["tasks"]:
            nodes[f"{phase['name']}/{task['project']}"] = task
            for s in task["steps"]:
                steps[f"{phase['name']}/{task['project']}/{s['name']}"] = s
    return steps, nodes


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k in after if k not in ("updated_at", "steps", "tasks") and before.get(k) != after[k]}


async def newest_change(store: Store, run_id: UUID) -> int:
    after = 0
    while page := await store.changes_since(run_id, after, limit=500):
        after = page[-1].id
    return after


async def walk(store: Store, repo: str) -> AsyncIterator[tuple[Write, JsonDocument, JsonDocument]]:
    """Run the scenario on a discovered run, checking every write; yields (write, before, after)."""
    [run] = await discovered_runs(store, repo)
    ex: list[RunExecutions] = []
    before = await store.executions_json(run.id, **PAGE)
    last = await newest_change(store, run.id)
    for write in scenario(store, run, ex):
        await write.run()
        after = await store.executions_json(run.id, **PAGE)
        newest = await newest_change(store, run.id)
        assert after.body == executions_reference(await store.get_executions(run.id)), write.label
        if not write.changes:
            assert (after.version, after.body, newest) == (before.version, before.body, last), write.label
        else:
            assert after.version != before.version, write.label
            assert newest > last, f"{write.label}: no change recorded"
            steps0, nodes0 = flatten(before)
            steps1, nodes1 = flatten(after)
            if write.created:
                assert not steps0, write.label
                assert steps1, write.label
            else:
                moved = {k: changed_fields(steps0[k], steps1[k]) for k in steps1}
                assert {k: v for k, v in moved.items() if v} == write.steps, write.label
                statuses = {k for k in nodes1 if nodes0[k]["status"] != nodes1[k]["status"]}
                assert statuses == write.nodes, write.label
        yield write, before, after
        before, last = after, newest


async def test_every_write_that_changes_the_executions_moves_their_version(store: Store, repo: str) -> None:
    labels = [write.label async for write, _, _ in walk(store, repo)]
    assert len(labels) == 16


# -- PostgreSQL: the version is the run's head ------------------------------------------------------------

_ROW_VERSIONS = """
    SELECT array_agg(x ORDER BY x) FROM (
        SELECT 'p' || id || ':' || xmin AS x FROM phase_executions WHERE run_id = $1
        UNION ALL SELECT 't' || t.id || ':' || t.xmin FROM task_executions t
            JOIN phase_executions p ON p.id = t.phase_id WHERE p.run_id = $1
        UNION ALL SELECT 's' || s.id || ':' || s.xmin FROM step_executions s JOIN task_executions t ON t.id = s.task_id
            JOIN phase_executions p ON p.id = t.phase_id WHERE p.run_id = $1
    ) rows
"""


async def test_postgres_no_row_of_the_executions_changes_without_moving_the_head(
    pg_store: PostgresStore, pg_repo: str, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows_before: Any = None
        async for write, before, after in walk(pg_store, pg_repo):
            run_id = UUID(json.loads(after.body)["run_id"])
            rows = await conn.fetchval(_ROW_VERSIONS, run_id)
            head = await conn.fetchval("SELECT change_id FROM run_heads WHERE run_id = $1", run_id)
            assert after.version == f"c{head}", write.label
            if rows != rows_before:
                assert after.version != before.version, f"{write.label}: rows rewritten, head unchanged"
            rows_before = rows
    finally:
        await conn.close()


async def test_postgres_a_run_without_a_head_is_versioned_by_its_rows(
    pg_store: PostgresStore, pg_repo: str, dsn: str
) -> None:
    """Runs whose changes were pruned before heads were kept (0010_run_heads.sql) have no head: their
    version comes from the rows, and the first write gives them one."""
    [run] = await discovered_runs(pg_store, pg_repo)
    ex = await pg_store.create_executions(run.id, discovery(run.commit_sha))
    conn = await asyncpg.connect(dsn)
    try:
        headed = await pg_store.executions_json(run.id, **PAGE)
        await conn.execute("DELETE FROM run_heads WHERE run_id = $1", run.id)
        fresh = await PostgresStore.connect(dsn)  # nothing held: the body is built again
        try:
            headless = await fresh.executions_json(run.id, **PAGE)
            assert headless.version.startswith("x")
            assert (headless.body, headless.total) == (headed.body, headed.total)
            assert (await fresh.executions_json(run.id, **PAGE)).version == headless.version
            await conn.execute(
                "UPDATE step_executions SET message = 'by hand' WHERE id = $1", ex.step_id("test", "api", "unit")
            )
            by_hand = await fresh.executions_json(run.id, **PAGE)
            assert by_hand.version.startswith("x")
            assert by_hand.version != headless.version
            assert b"by hand" in by_hand.body
            await fresh.apply_step_events([event(run, ex.step_id("test", "api", "lint"), "started", at=at(1))])
            moved = await fresh.executions_json(run.id, **PAGE)
            assert moved.version.startswith("c")
            assert moved.body == executions_reference(await fresh.get_executions(run.id))
        finally:
            await fresh.close()
    finally:
        await conn.close()


async def test_postgres_pruning_a_runs_changes_keeps_its_version(
    pg_store: PostgresStore, pg_repo: str, dsn: str
) -> None:
    """The head outlives the changes it names: a pruned run keeps its version (and its ETag)."""
    old, later = await discovered_runs(pg_store, pg_repo, 2)
    await pg_store.create_executions(old.id, discovery(old.commit_sha))
    await pg_store.finish_run(old.id, Status.CANCELLED)
    kept = await pg_store.executions_json(old.id, **PAGE)
    conn = await asyncpg.connect(dsn)
    try:
        day = timedelta(hours=25).total_seconds()
        await conn.execute("UPDATE run_changes SET at = at - make_interval(secs => $1)", day)
        await conn.execute("UPDATE pipeline_runs SET completed_at = completed_at - make_interval(secs => $1)", day)
    finally:
        await conn.close()
    await pg_store.finish_run(later.id, Status.CANCELLED)  # prunes
    assert await pg_store.changes_since(old.id, 0, limit=10) == []
    after = await pg_store.executions_json(old.id, **PAGE)
    assert (after.version, after.body) == (kept.version, kept.body)


# -- PostgreSQL: reads of one document share statements, never an older one ----------------------------------


class GatedPool:
    """The pool of a store's document reads, counting statements and holding each answer until ``gate``
    opens (``holding`` is set once one is held); ``fail`` makes the next statement raise."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.statements = 0
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()
        self.fail: Exception | None = None

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.statements += 1
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        row = await self.pool.fetchrow(sql, *args)
        self.holding.set()
        await self.gate.wait()
        return row


async def test_postgres_concurrent_reads_share_statements_sent_after_they_arrived(
    pg_store: PostgresStore, pg_repo: str
) -> None:
    [run] = await discovered_runs(pg_store, pg_repo)
    ex = await pg_store.create_executions(run.id, discovery(run.commit_sha))
    first = await pg_store.executions_json(run.id, **PAGE)
    gated = GatedPool(pg_store._documents._pool)
    pg_store._documents._pool = gated  # type: ignore[assignment]

    def read() -> asyncio.Task[JsonDocument]:
        return asyncio.create_task(pg_store.executions_json(run.id, **PAGE))

    early = [read() for _ in range(8)]
    await gated.holding.wait()  # their statement ran: the version before the write below
    await pg_store.apply_step_events([event(run, ex.step_id("test", "api", "unit"), "started", at=at(1))])
    late = [read() for _ in range(8)]  # arrived after the write committed: must see it
    for _ in range(3):
        await asyncio.sleep(0)  # every late reader waits on its batch (no I/O before that)
    gated.gate.set()
    early_docs = await asyncio.gather(*early)
    late_docs = await asyncio.gather(*late)
    assert {d.version for d in early_docs} == {first.version}
    assert {d.version for d in late_docs} != {first.version}
    assert len({d.version for d in late_docs}) == 1
    assert late_docs[0].body == executions_reference(await pg_store.get_executions(run.id))
    assert gated.statements == 3  # early: the version; late: the version, then the document

    gated.fail = ConnectionResetError("the connection dropped")
    failed = await asyncio.gather(*(read() for _ in range(4)), return_exceptions=True)
    assert all(isinstance(f, ServiceUnavailableError) for f in failed)
    assert (await pg_store.executions_json(run.id, **PAGE)).version == late_docs[0].version
    missing = await asyncio.gather(
        *(pg_store.executions_json(uuid4(), **PAGE) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(m, NotFoundError) for m in missing)


async def test_postgres_a_cancelled_reader_does_not_cancel_the_others(pg_store: PostgresStore, pg_repo: str) -> None:
    [run] = await discovered_runs(pg_store, pg_repo)
    gated = GatedPool(pg_store._documents._pool)
    pg_store._documents._pool = gated  # type: ignore[assignment]
    readers = [asyncio.create_task(pg_store.run_json(run.id)) for _ in range(3)]
    await gated.holding.wait()
    readers[0].cancel()
    gated.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await readers[0]
    assert [json.loads(d.body)["id"] for d in await asyncio.gather(*readers[1:])] == [str(run.id)] * 2

"""MemoryStore beyond the compliance suite: PostgreSQL down, several connections, its clock.

What it shares with PostgresStore is proven in ``tests/integration/store`` (run with ``-k memory``
for the fake alone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from forge.domain.discovery import DiscoveryResult, PhaseGroup
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.errors import InvalidInputError, ServiceUnavailableError
from forge.ports.fakes import MemoryStore
from forge.ports.store import Database, ExecutionStore, NewRepository, NewRun, RepositoryStore, RunFilter, RunStore

REPO = NewRepository("acme/app", "https://git.example/acme/app.git")
SHA = "a" * 40


def found(*, phases: list[PhaseGroup] | None = None) -> DiscoveryResult:
    return DiscoveryResult(commit=SHA, base=None, projects=[], affected=[], phase_groups=phases or [])


def every_call(store: MemoryStore) -> dict[str, Callable[[], Awaitable[object]]]:
    """One valid call of every port method (on ids that may not exist: down comes first)."""
    some = uuid4()
    event = StepEvent(run_id=some, step_id=some, attempt=1, kind="started")
    return {
        "migrate": store.migrate,
        "ping": store.ping,
        "register_repository": lambda: store.register_repository(REPO),
        "get_repository": lambda: store.get_repository(REPO.name),
        "list_repositories": lambda: store.list_repositories(limit=10, offset=0),
        "create_run": lambda: store.create_run(NewRun(REPO.name, SHA)),
        "get_run": lambda: store.get_run(some),
        "list_runs": lambda: store.list_runs(RunFilter(), limit=10, offset=0),
        "claim_discovery": lambda: store.claim_discovery(limit=1),
        "runs_discovering": store.runs_discovering,
        "record_discovery": lambda: store.record_discovery(some, found(), "k"),
        "fail_discovery": lambda: store.fail_discovery(some, "e", code="c"),
        "set_workflow": lambda: store.set_workflow(some, "wf"),
        "claim_execution": lambda: store.claim_execution(limit=1, claimer="c", lease=30),
        "renew_execution_claims": lambda: store.renew_execution_claims([some], claimer="c"),
        "release_execution_claims": lambda: store.release_execution_claims([some], claimer="c"),
        "runs_executing": store.runs_executing,
        "finish_run": lambda: store.finish_run(some, Status.FAILED),
        "request_cancel": lambda: store.request_cancel(some),
        "runs_cancel_requested": store.runs_cancel_requested,
        "create_executions": lambda: store.create_executions(some, found()),
        "get_executions": lambda: store.get_executions(some),
        "get_step": lambda: store.get_step(some),
        "apply_step_events": lambda: store.apply_step_events([event]),
        "fail_step": lambda: store.fail_step(some, None),
    }


def test_memory_store_implements_every_port() -> None:
    store = MemoryStore()
    ports: tuple[Database, RepositoryStore, RunStore, ExecutionStore] = (store, store, store, store)  # mypy checks
    assert all(port is store for port in ports)


async def test_down_every_call_is_unavailable_until_up_again() -> None:
    store = MemoryStore()
    await store.register_repository(REPO)
    store.available = False
    assert store.available is False
    for name, call in every_call(store).items():
        with pytest.raises(ServiceUnavailableError, match="PostgreSQL is unavailable") as info:
            await call()
        assert info.value.retry_after == 1.0, name
    store.available = True
    assert (await store.get_repository(REPO.name)).name == REPO.name  # nothing was lost
    assert await store.migrate() == []


async def test_fail_with_raises_the_given_error_each_time() -> None:
    store = MemoryStore()
    store.fail_with(ServiceUnavailableError("PostgreSQL is in recovery", retry_after=5.0))
    assert store.available is False
    raised = []
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError, match="in recovery") as info:
            await store.ping()
        raised.append(info.value)
    assert raised[0] is not raised[1]
    assert [e.retry_after for e in raised] == [5.0, 5.0]
    store.available = True
    await store.ping()
    store.available = False  # the error given before is forgotten
    with pytest.raises(ServiceUnavailableError, match="memory store is down"):
        await store.ping()


async def test_checks_made_before_the_database_come_first_when_down() -> None:
    store = MemoryStore()
    store.available = False
    some = uuid4()
    assert await store.apply_step_events([]) == 0
    with pytest.raises(InvalidInputError, match="limit"):
        await store.list_repositories(limit=0, offset=0)
    with pytest.raises(InvalidInputError, match="colour"):
        await store.list_runs(RunFilter(extra={"colour": "red"}), limit=10, offset=0)
    with pytest.raises(InvalidInputError, match="limit"):
        await store.claim_discovery(limit=0)
    with pytest.raises(InvalidInputError, match="lease must be positive"):
        await store.claim_execution(limit=1, claimer="c", lease=0)
    with pytest.raises(InvalidInputError, match="claimer must be"):
        await store.claim_execution(limit=1, claimer="", lease=30)
    with pytest.raises(InvalidInputError, match="claimer must be"):
        await store.renew_execution_claims([some], claimer="x" * 257)
    assert await store.renew_execution_claims([], claimer="c") == set()  # nothing to ask: no query
    assert await store.release_execution_claims([], claimer="c") == set()
    with pytest.raises(InvalidInputError, match="not skipped"):
        await store.finish_run(some, Status.SKIPPED)
    with pytest.raises(InvalidInputError, match="must not be empty"):
        await store.set_workflow(some, "")


async def test_connections_share_the_database_and_its_outage() -> None:
    api = MemoryStore()
    controller = api.connect()
    run_id = (await api.register_repository(REPO), await api.create_run(NewRun(REPO.name, SHA)))[1][0].id
    assert [r.id for r in await controller.claim_discovery(limit=5)] == [run_id]
    assert await api.claim_discovery(limit=5) == []

    api.available = False
    with pytest.raises(ServiceUnavailableError):
        await controller.get_run(run_id)
    controller.available = True
    await api.close()
    with pytest.raises(ServiceUnavailableError, match="pool is closed"):
        await api.ping()
    assert (await controller.get_run(run_id)).status is Status.RUNNING  # one closed connection is not an outage


async def test_clock_stamps_and_stale_claims() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = MemoryStore(clock=lambda: now)
    await store.register_repository(REPO)
    first, _ = await store.create_run(NewRun(REPO.name, SHA))
    second, _ = await store.create_run(NewRun(REPO.name, "b" * 40))
    assert (
        now <= first.created_at < second.created_at < now + timedelta(milliseconds=1)
    )  # a frozen clock still orders writes

    await store.claim_discovery(limit=5)
    await store.record_discovery(first.id, found(), "k")
    assert [r.id for r in await store.claim_execution(limit=5, claimer="a", lease=30)] == [first.id]
    now += timedelta(seconds=29)
    assert await store.claim_execution(limit=5, claimer="b", lease=30) == []
    now += timedelta(seconds=2)
    assert [r.id for r in await store.claim_execution(limit=5, claimer="b", lease=30)] == [first.id]  # a died


async def test_timestamps_are_utc() -> None:
    store = MemoryStore(clock=lambda: datetime(2026, 1, 1, 3, tzinfo=UTC).astimezone(tz=None))
    repo, _ = await store.register_repository(REPO)
    assert repo.created_at.tzinfo is UTC
    assert repo.created_at == datetime(2026, 1, 1, 3, tzinfo=UTC)

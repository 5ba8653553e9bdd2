"""The adapters the store compliance suite runs against, and the PostgreSQL-only fixtures.

A test that asks for ``store``, ``repo`` or ``harness`` runs once per adapter in ``HARNESSES``
(ids ``memory`` and ``postgres``), each time on a fresh database. Tests about PostgreSQL itself
(migrations, the schema, the server, connecting, durability) ask for ``dsn``, ``pg_store`` or
``pg_repo`` instead and run on PostgreSQL only.

To add an adapter, write a ``StoreHarness`` for it and list its factory in ``HARNESSES``: the tests
only ever see the store ports plus the few test-side helpers a harness provides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID, uuid4

import asyncpg
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.domain.status import Status
from forge.embedded.process import ServiceProcess
from forge.ports.fakes import MemoryStore
from forge.ports.store import Database, ExecutionStore, NewRepository, ReleaseStore, RepositoryStore, RunStore
from forge.testing.postgres import create_database_async


class Store(Database, RepositoryStore, RunStore, ExecutionStore, ReleaseStore, Protocol):
    """Every store port: what each adapter under test is."""


class StoreHarness(Protocol):
    async def open(self) -> Store:
        """A new, migrated connection to the test's database (the caller closes it)."""

    async def disable_repository(self, name: str) -> None:
        """Disable a registered repository (no port does; an operator does it in the database)."""

    async def set_run_status(self, run_id: UUID, status: Status) -> None:
        """Set a run's status alone, behind the ports' back."""

    async def age_claims(self, seconds: float) -> None:
        """Every claim (runs and deployments) as if made or last renewed ``seconds`` earlier."""


class PostgresHarness:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def open(self) -> Store:
        store = await PostgresStore.connect(self._dsn)
        await store.migrate()
        return store

    async def disable_repository(self, name: str) -> None:
        await self._execute("UPDATE repositories SET enabled = false WHERE name = $1", name)

    async def set_run_status(self, run_id: UUID, status: Status) -> None:
        await self._execute("UPDATE pipeline_runs SET status = $2 WHERE id = $1", run_id, str(status))

    async def age_claims(self, seconds: float) -> None:  # PostgreSQL's now() cannot be moved: move the claims
        back = timedelta(seconds=seconds)
        await self._execute(
            "UPDATE deployments SET claimed_at = claimed_at - $1::interval WHERE claimed_at IS NOT NULL", back
        )
        await self._execute(
            "UPDATE pipeline_runs SET execution_claimed_at = execution_claimed_at - $1::interval"
            " WHERE execution_claimed_at IS NOT NULL",
            back,
        )

    async def _execute(self, sql: str, *args: object) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()


class MemoryHarness:
    """``MemoryStore``: each ``open()`` is another connection to one in-memory database, whose clock runs
    ``_ahead`` of the wall clock."""

    def __init__(self) -> None:
        self._ahead = timedelta()
        self._store = MemoryStore(clock=lambda: datetime.now(UTC) + self._ahead)

    async def open(self) -> Store:
        return self._store.connect()

    async def disable_repository(self, name: str) -> None:
        self._store.testing_set_repository_enabled(name, False)

    async def set_run_status(self, run_id: UUID, status: Status) -> None:
        self._store.testing_set_run_status(run_id, status)

    async def age_claims(self, seconds: float) -> None:
        self._ahead += timedelta(seconds=seconds)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], StoreHarness]] = {
    "memory": lambda _request: MemoryHarness(),
    "postgres": lambda request: PostgresHarness(request.getfixturevalue("dsn")),
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> StoreHarness:
    return HARNESSES[request.param](request)


@pytest.fixture
async def store(harness: StoreHarness) -> AsyncIterator[Store]:
    st = await harness.open()
    yield st
    await st.close()


@pytest.fixture
async def repo(store: Store) -> str:
    """A registered repository's name."""
    repository, _ = await store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    return repository.name


# -- PostgreSQL only ----------------------------------------------------------------------------------


@pytest.fixture
async def dsn(postgres_server: ServiceProcess) -> AsyncIterator[str]:
    """DSN of a new empty database, dropped after the test."""
    name = f"store_{uuid4().hex[:16]}"
    url = await create_database_async(postgres_server.url, name)
    yield url
    conn = await asyncpg.connect(postgres_server.url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_store(dsn: str) -> AsyncIterator[PostgresStore]:
    st = await PostgresStore.connect(dsn)
    await st.migrate()
    yield st
    await st.close()


@pytest.fixture
async def pg_repo(pg_store: PostgresStore) -> str:
    """A repository registered in ``pg_store``'s database."""
    repository, _ = await pg_store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    return repository.name

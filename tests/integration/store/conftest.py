"""A fresh, migrated database per test on the session PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.embedded.process import ServiceProcess
from forge.ports.store import NewRepository
from forge.testing.postgres import create_database_async


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
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    st = await PostgresStore.connect(dsn)
    await st.migrate()
    yield st
    await st.close()


@pytest.fixture
async def repo(store: PostgresStore) -> str:
    """A registered repository's name."""
    repository, _ = await store.register_repository(NewRepository("acme/app", "https://git.example/acme/app.git"))
    return repository.name

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from forge.adapters.postgres_store import PostgresStore
from forge.embedded.process import ServiceProcess, free_port
from forge.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from tests.integration.store.conftest import StoreHarness


async def test_connect_to_a_closed_port() -> None:
    with pytest.raises(ServiceUnavailableError, match="PostgreSQL"):
        await PostgresStore.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=2)


async def test_unknown_database_is_unavailable(postgres_server: ServiceProcess) -> None:
    with pytest.raises(ServiceUnavailableError):
        await PostgresStore.connect(postgres_server.url.rsplit("/", 1)[0] + "/no_such_database")


async def test_closed_store_is_unavailable(harness: StoreHarness) -> None:
    store = await harness.open()
    await store.ping()
    await store.close()
    with pytest.raises(ServiceUnavailableError):
        await store.ping()

"""An acknowledged write survives a SIGKILL of PostgreSQL (the embedded server keeps synchronous commits).

The test starts an embedded server of its own, even when ``FORGE_TEST_DATABASE_URL`` points the
session fixture at an external one: it kills the server, which no other test may share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import asyncpg

from forge.adapters.postgres_store import PostgresStore
from forge.embedded.postgres import PostgresProcess, start_postgres
from forge.errors import ServiceUnavailableError
from forge.ports.store import NewRepository

_WRITERS = 8
_KILL_AFTER = 300  # acknowledged registrations before the SIGKILL


def _kill_group(server: PostgresProcess) -> None:
    """SIGKILL the postmaster and every backend (one process group), and wait until all are gone."""
    os.killpg(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            break
        if server._popen is not None:  # reap the postmaster, our child
            server._popen.poll()
        time.sleep(0.02)
    else:
        raise AssertionError(f"PostgreSQL process group {server.pid} survived SIGKILL")


async def test_acknowledged_registrations_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    server = start_postgres(data)
    servers = [server]
    try:
        store = await PostgresStore.connect(server.url, min_size=_WRITERS, max_size=_WRITERS)
        await store.migrate()
        acknowledged: list[str] = []
        enough = asyncio.Event()

        async def writer(n: int) -> None:
            for i in range(100_000):
                name = f"acme/w{n}-{i}"
                try:
                    await store.register_repository(NewRepository(name, f"https://git.example/{name}.git"))
                # The server is gone: this call was never acknowledged. Mostly ServiceUnavailableError,
                # but asyncpg can raise InternalClientError while releasing a connection that just died.
                except (ServiceUnavailableError, asyncpg.InternalClientError):
                    return
                acknowledged.append(name)
                if len(acknowledged) >= _KILL_AFTER:
                    enough.set()

        async with asyncio.TaskGroup() as tasks:
            for n in range(_WRITERS):
                tasks.create_task(writer(n))
            await enough.wait()
            _kill_group(server)  # the other writers have calls in flight right now
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.close(), timeout=5)

        again = start_postgres(data)  # crash recovery replays the WAL
        servers.append(again)
        conn = await asyncpg.connect(again.url)
        try:
            stored = {row["name"] for row in await conn.fetch("SELECT name FROM repositories")}
        finally:
            await conn.close()
        lost = sorted(set(acknowledged) - stored)
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged registrations were lost: {lost[:5]}"
    finally:
        for proc in reversed(servers):
            proc.stop()
        if os.geteuid() == 0 and (data / "pgdata").is_symlink():  # relocated cluster under /var/tmp
            shutil.rmtree((data / "pgdata").resolve().parent, ignore_errors=True)

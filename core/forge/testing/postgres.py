"""PostgreSQL for tests: the embedded server (:mod:`forge.embedded.postgres`) or an existing one.

With ``FORGE_TEST_DATABASE_URL`` set no process is started: that server is used as it is. Each test
then works in a database of its own (:func:`create_database_async`).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from forge.embedded import postgres as embedded
from forge.embedded.postgres import PostgresProcess
from forge.errors import InvalidInputError, ServiceUnavailableError

__all__ = ["EXTERNAL_URL_ENV", "create_database", "create_database_async", "start_postgres"]

EXTERNAL_URL_ENV = "FORGE_TEST_DATABASE_URL"
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def start_postgres(data_dir: Path, port: int | None = None, *, timeout: float = 30.0) -> PostgresProcess:
    """The server of ``FORGE_TEST_DATABASE_URL`` when set (never stopped), else an embedded one in ``data_dir``."""
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return PostgresProcess(name="postgres", pid=0, log=Path(os.devnull), url=external, external=True)
    return embedded.start_postgres(data_dir, port, timeout=timeout)


async def create_database_async(url: str, name: str) -> str:
    """(Re)create the empty database ``name`` on the server of ``url``; its DSN."""
    if not _DB_NAME_RE.fullmatch(name):
        raise InvalidInputError(f"database name {name!r} must match {_DB_NAME_RE.pattern}")
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ServiceUnavailableError(f"PostgreSQL at {_redact(url)} is unreachable: {exc}") from exc
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(url: str, name: str) -> str:
    """Blocking :func:`create_database_async`; safe to call with or without a running event loop."""
    result: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(create_database_async(url, name)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="forge-create-database")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))

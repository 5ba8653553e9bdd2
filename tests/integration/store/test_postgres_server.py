"""The PostgreSQL fixture itself: as root it runs unprivileged, restarts reuse the cluster."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from forge.embedded.postgres import PG_SYSTEM_USER, PostgresProcess
from forge.embedded.process import ServiceProcess
from forge.testing.postgres import EXTERNAL_URL_ENV, create_database, start_postgres


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


async def test_session_server_answers_over_tcp(postgres_server: ServiceProcess) -> None:
    assert postgres_server.url.startswith("postgresql://postgres@127.0.0.1:")
    conn = await asyncpg.connect(postgres_server.url)
    try:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful as root")
def test_as_root_the_server_runs_unprivileged(postgres_server: ServiceProcess) -> None:
    if isinstance(postgres_server, PostgresProcess) and postgres_server.external:
        pytest.skip(f"{EXTERNAL_URL_ENV} is set")
    import pwd

    uid = _uid_of(postgres_server.pid)
    assert uid != 0
    assert pwd.getpwuid(uid).pw_name == PG_SYSTEM_USER


async def test_restart_reuses_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTERNAL_URL_ENV, raising=False)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # like /tmp/pytest-of-root, which pytest keeps at 0700
    data = private / "dev"
    first = start_postgres(data)
    try:
        url = create_database(first.url, "keep")
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        await conn.close()
        again = start_postgres(data)  # still running: the same server
        assert again.pid == first.pid
        assert again.url == first.url
    finally:
        first.stop()
    assert not (data / "pgdata" / "postmaster.pid").exists()
    if os.geteuid() == 0:  # unreachable for the service user: relocated, and no parent was chmod-ed
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert (data / "pgdata").is_symlink()
        assert str((data / "pgdata").resolve()).startswith("/var/tmp/forge-postgres/")

    second = start_postgres(data)
    try:
        conn = await asyncpg.connect(second.url.rsplit("/", 1)[0] + "/keep")
        assert await conn.fetchval("SELECT v FROM kept") == 42
        await conn.close()
    finally:
        second.stop()
    shutil.rmtree((data / "pgdata").resolve().parent if os.geteuid() == 0 else data)


def test_external_server_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTERNAL_URL_ENV, "postgresql://someone@db.example:5432/postgres")
    proc = start_postgres(tmp_path / "unused")
    assert proc.url == "postgresql://someone@db.example:5432/postgres"
    proc.stop()  # a no-op: nothing was started
    assert not (tmp_path / "unused").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="relocation only happens as root")
def test_relocated_cluster_is_pruned_when_its_data_dir_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTERNAL_URL_ENV, raising=False)
    gone = tmp_path / "gone"
    proc = start_postgres(gone)
    proc.stop()
    home = (gone / "pgdata").resolve().parent
    assert home.is_dir()
    shutil.rmtree(gone)
    proc = start_postgres(tmp_path / "next")
    proc.stop()
    assert not home.exists()
    shutil.rmtree(tmp_path / "next")

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from forge.adapters.postgres_store import PostgresStore, migration_files
from forge.ports.store import RunStore

TABLES = {
    "schema_migrations",
    "repositories",
    "pipeline_runs",
    "phase_executions",
    "task_executions",
    "step_executions",
    "releases",
    "release_aliases",
    "release_artifacts",
    "deployments",
    "approvals",
}


def test_postgres_store_implements_the_port(pg_store: PostgresStore) -> None:
    port: RunStore = pg_store  # checked by mypy
    assert port is pg_store


def test_migration_files_are_ordered_sql() -> None:
    names = [name for name, _ in migration_files()]
    assert names[0] == "0001_initial.sql"
    assert names == sorted(names)


async def test_migrate_twice_is_a_no_op(dsn: str) -> None:
    store = await PostgresStore.connect(dsn)
    try:
        first = await store.migrate()
        second = await store.migrate()
    finally:
        await store.close()
    assert first == [name for name, _ in migration_files()]
    assert second == []
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert [r["name"] for r in rows] == first
    assert tables >= TABLES


async def test_concurrent_migrate_from_two_pools_applies_once(dsn: str) -> None:
    stores = [await PostgresStore.connect(dsn) for _ in range(2)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores for _ in range(2)))
    finally:
        for s in stores:
            await s.close()
    applied = [name for result in results for name in result]
    assert sorted(applied) == [name for name, _ in migration_files()]


async def test_one_active_deployment_per_environment_and_project(dsn: str, pg_repo: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        repo_id = await conn.fetchval("SELECT id FROM repositories WHERE name = $1", pg_repo)
        release_ids = [
            await conn.fetchval(
                "INSERT INTO releases (repository_id, project, commit_sha, number, oci_ref, oci_digest, trigger,"
                " created_by) VALUES ($1, 'api', $2, $3, 'reg/acme/app/api:x', $4, 'push', 'ci') RETURNING id",
                repo_id,
                f"{n:040x}",
                n,
                "sha256:" + "ab" * 32,
            )
            for n in (1, 2)
        ]
        insert = (
            "INSERT INTO deployments (release_id, repository_id, project, environment, status, deployed_by)"
            " VALUES ($1, $2, 'api', 'dev', $3, 'ci')"
        )
        await conn.execute(insert, release_ids[0], repo_id, "active")
        await conn.execute(insert, release_ids[1], repo_id, "pending")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, release_ids[1], repo_id, "active")
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # (release, repository, project) must agree
            await conn.execute(
                "INSERT INTO deployments (release_id, repository_id, project, environment, deployed_by)"
                " VALUES ($1, $2, 'web', 'dev', 'ci')",
                release_ids[0],
                repo_id,
            )
    finally:
        await conn.close()

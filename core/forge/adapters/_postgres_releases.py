"""``ReleaseStore`` on PostgreSQL, mixed into ``PostgresStore``.

Numbering: a release's number is the project's highest + 1, read and inserted under a
transaction-scoped advisory lock keyed on (repository, project). The lock is its own statement:
in READ COMMITTED each statement reads a snapshot taken when it starts, so the statement that
reads the highest number must start after the lock is held to see a release committed by the
previous holder. Everything else of a write (the idempotency check, alias clashes, the release,
its aliases and artifacts) is that one second statement, so a recording costs BEGIN, lock,
write, COMMIT. Reads are one statement each, aliases and artifacts aggregated per release.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from forge.adapters._postgres_rows import translate_errors
from forge.domain.entities import AliasType, Release, ReleaseAlias
from forge.errors import ForgeError, NotFoundError
from forge.ports.store import (
    NewRelease,
    Page,
    ReleaseFilter,
    alias_conflict,
    ambiguous_ref,
    check_page,
    check_release_ref,
    no_release,
)

__all__ = ["PostgresReleases"]

#: The first key of the two-key advisory locks on a project's releases ("rel"); the second is a hash
#: of (repository id, project). Two-key locks never collide with the migrations' one-key lock.
_RELEASE_LOCK_CLASS = 0x72656C
#: Ambiguous sha prefixes name at most this many candidates.
_CANDIDATES = 10

_ALIAS_ORDER = "array_position(ARRAY['numeric', 'tag', 'branch', 'custom'], a.type)"
_COLUMNS_SQL = f"""
    r.id, repo.name AS repository, r.project, r.commit_sha, r.number, r.oci_ref, r.oci_digest,
           r.trigger, r.branch, r.tag, r.run_id, r.created_by, r.created_at, r.updated_at, r.tagged_at,
           ARRAY(SELECT ROW(a.alias, a.type) FROM release_aliases a WHERE a.release_id = r.id
                 ORDER BY {_ALIAS_ORDER}, a.alias) AS aliases,
           ARRAY(SELECT ROW(x.id, x.name, x.type, x.tracking_ref, x.tracking_digest, x.published::text,
                            x.created_at, x.updated_at)
                 FROM release_artifacts x WHERE x.release_id = r.id ORDER BY x.name) AS artifacts
"""  # noqa: S608 - constant fragments only
_FROM = "releases r JOIN repositories repo ON repo.id = r.repository_id"
_SELECT = f"SELECT {_COLUMNS_SQL} FROM {_FROM}"  # noqa: S608
#: One page of releases, newest first, with the number matching in all; ``{where}``, ``{limit}`` and
#: ``{offset}`` are filled with constant clauses and $n placeholders. Aliases and artifacts are
#: aggregated for the page's rows only.
_SQL_LIST = f"""
    WITH page AS (
        SELECT r.id, count(*) OVER () AS total FROM {_FROM} {{where}}
        ORDER BY r.created_at DESC, r.number DESC, r.id LIMIT {{limit}} OFFSET {{offset}}
    )
    SELECT {_COLUMNS_SQL}, page.total
    FROM page JOIN releases r ON r.id = page.id JOIN repositories repo ON repo.id = r.repository_id
    ORDER BY r.created_at DESC, r.number DESC, r.id
"""  # noqa: S608

_SQL_LOCK_PROJECT = f"""
    SELECT id, pg_advisory_xact_lock({_RELEASE_LOCK_CLASS}, hashtext(id::text || '/' || $2)) IS NULL AS locked
    FROM repositories WHERE name = $1
"""  # noqa: S608

#: $1 repository id, $2 project, $3 commit, $4 oci_ref, $5 oci_digest, $6 trigger, $7 run_id, $8 created_by,
#: $9 branch, $10 tag, $11 artifacts (jsonb array of objects). One row: ``existing`` (the id of the
#: commit's release), ``clash`` (an alias another release holds), or the new release.
_SQL_RECORD = """
    WITH existing AS (
        SELECT id FROM releases WHERE repository_id = $1 AND project = $2 AND commit_sha = $3
    ),
    next AS (
        SELECT COALESCE(max(number), 0) + 1 AS number FROM releases WHERE repository_id = $1 AND project = $2
    ),
    wanted AS (  -- the aliases of NewRelease.aliases: the number, the tag, <branch>-<number>; a tag wins a tie
        SELECT DISTINCT ON (v.alias) v.alias, v.type, v.pos
        FROM next, LATERAL (VALUES (1, next.number::text, 'numeric'), (2, $10::text, 'tag'),
                                   (3, $9::text || '-' || next.number, 'branch')) AS v(pos, alias, type)
        WHERE v.alias IS NOT NULL
        ORDER BY v.alias, v.pos
    ),
    clash AS (
        SELECT w.alias, w.type, r.number
        FROM wanted w
        JOIN release_aliases a ON a.repository_id = $1 AND a.project = $2 AND a.alias = w.alias
        JOIN releases r ON r.id = a.release_id
        ORDER BY w.pos LIMIT 1
    ),
    ins AS (
        INSERT INTO releases (repository_id, project, commit_sha, number, oci_ref, oci_digest, trigger, run_id,
                              created_by, branch, tag, created_at, updated_at)
        SELECT $1, $2, $3, next.number, $4, $5, $6, $7, $8, $9, $10, clock_timestamp(), clock_timestamp()
        FROM next
        WHERE NOT EXISTS (SELECT 1 FROM existing) AND NOT EXISTS (SELECT 1 FROM clash)
        RETURNING *
    ),
    aliases AS (
        INSERT INTO release_aliases (release_id, repository_id, project, alias, type)
        SELECT ins.id, $1, $2, w.alias, w.type FROM ins, wanted w
        RETURNING alias, type
    ),
    artifacts AS (
        INSERT INTO release_artifacts (release_id, name, type, tracking_ref, tracking_digest, published)
        SELECT ins.id, x.name, x.type, x.tracking_ref, x.tracking_digest, x.published
        FROM ins, jsonb_to_recordset($11::jsonb)
            AS x(name text, type text, tracking_ref text, tracking_digest text, published jsonb)
        RETURNING *
    )
    SELECT (SELECT id FROM existing) AS existing,
           (SELECT ROW(c.alias, c.type, c.number) FROM clash c) AS clash,
           ins.id, ins.project, ins.commit_sha, ins.number, ins.oci_ref, ins.oci_digest, ins.trigger, ins.branch,
           ins.tag, ins.run_id, ins.created_by, ins.created_at, ins.updated_at, ins.tagged_at,
           ARRAY(SELECT ROW(a.alias, a.type) FROM aliases a ORDER BY array_position(
                 ARRAY['numeric', 'tag', 'branch', 'custom'], a.type), a.alias) AS aliases,
           ARRAY(SELECT ROW(x.id, x.name, x.type, x.tracking_ref, x.tracking_digest, x.published::text,
                            x.created_at, x.updated_at) FROM artifacts x ORDER BY x.name) AS artifacts
    FROM (SELECT 1) AS one LEFT JOIN ins ON true
"""

_SQL_GET = f"""
    WITH hit AS (
        SELECT a.release_id AS id
        FROM release_aliases a JOIN repositories repo ON repo.id = a.repository_id
        WHERE repo.name = $1 AND a.project = $2 AND a.alias = $3
    ),
    by_sha AS (
        SELECT r.id
        FROM releases r JOIN repositories repo ON repo.id = r.repository_id
        WHERE $4::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hit)
          AND repo.name = $1 AND r.project = $2 AND starts_with(r.commit_sha, $4::text)
        ORDER BY r.number LIMIT {_CANDIDATES + 1}
    )
    {_SELECT} WHERE r.id IN (SELECT id FROM hit UNION ALL SELECT id FROM by_sha) ORDER BY r.number
"""  # noqa: S608

_SQL_TO_TAG = f"{_SELECT} WHERE r.tagged_at IS NULL ORDER BY r.created_at, r.id LIMIT $1"
_SQL_MARK_TAGGED = "UPDATE releases SET tagged_at = COALESCE(tagged_at, now()) WHERE id = $1 RETURNING id"

#: ``ReleaseFilter`` fields and the comparison each makes with its text.
_FILTERS = {
    "repository": "repo.name = ${n}",
    "project": "r.project = ${n}",
    "run_id": "r.run_id = ${n}::uuid",
    "commit_sha": "r.commit_sha = ${n}",
    "trigger": "r.trigger = ${n}",
}


class PostgresReleases:
    """The ``ReleaseStore`` methods of ``PostgresStore`` (which provides the pool)."""

    _pool: asyncpg.Pool[asyncpg.Record]

    async def record_release(self, new: NewRelease) -> tuple[Release, bool]:
        new.check()
        artifacts = [
            {
                "name": a.name,
                "type": str(a.type),
                "tracking_ref": a.tracking_ref,
                "tracking_digest": a.tracking_digest,
                "published": [dict(p) for p in a.published],
            }
            for a in new.artifacts
        ]
        with translate_errors(new.what):
            async with self._pool.acquire() as conn, conn.transaction():
                repo = await conn.fetchrow(_SQL_LOCK_PROJECT, new.repository, new.project)
                if repo is None:
                    raise NotFoundError(
                        f"{new.what}: repository {new.repository!r} is not registered",
                        details={"repository": new.repository},
                    )
                row = await conn.fetchrow(
                    _SQL_RECORD,
                    repo["id"],
                    new.project,
                    new.commit_sha,
                    new.oci_ref,
                    new.oci_digest,
                    str(new.trigger),
                    new.run_id,
                    new.created_by,
                    new.branch,
                    new.tag,
                    artifacts,
                )
                assert row is not None  # one row from (SELECT 1)
                if row["existing"] is not None:
                    if new.tag is not None:
                        await _name_with_tag(conn, repo["id"], new, row["existing"])
                elif row["clash"] is not None:
                    alias, alias_type, holder = row["clash"]
                    raise alias_conflict(new, ReleaseAlias(alias=alias, type=AliasType(alias_type)), holder)
                else:
                    return _release(row, repository=new.repository), True
            found = await self._pool.fetchrow(f"{_SELECT} WHERE r.id = $1", row["existing"])
        assert found is not None  # releases are never deleted
        return _release(found), False

    async def get_release(self, repository: str, project: str, ref: str) -> Release:
        prefix = check_release_ref(ref)
        with translate_errors(f"reading release {ref!r} of {repository}/{project}"):
            rows = await self._pool.fetch(_SQL_GET, repository, project, ref, prefix)
        if not rows:
            raise no_release(repository, project, ref)
        if len(rows) > 1:
            raise ambiguous_ref(repository, project, ref, [r["number"] for r in rows[:_CANDIDATES]])
        return _release(rows[0])

    async def list_releases(self, flt: ReleaseFilter, *, limit: int, offset: int) -> Page[Release]:
        check_page(limit, offset)
        conditions = flt.conditions()
        clauses = [_FILTERS[key].format(n=n) for n, key in enumerate(conditions, start=1)]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        n = len(conditions)
        sql = _SQL_LIST.format(where=where, limit=f"${n + 1}", offset=f"${n + 2}")
        with translate_errors("listing releases"):
            rows = await self._pool.fetch(sql, *conditions.values(), limit, offset)
            if rows:
                total = rows[0]["total"]
            else:  # past the last page (or nothing matches): the window had no row to count on
                count = f"SELECT count(*) FROM {_FROM} {where}"  # noqa: S608 - $n only
                total = await self._pool.fetchval(count, *conditions.values())
        return Page([_release(r) for r in rows], int(total), limit, offset)

    async def releases_to_tag(self, *, limit: int) -> list[Release]:
        check_page(limit, 0)
        with translate_errors("listing releases to tag"):
            rows = await self._pool.fetch(_SQL_TO_TAG, limit)
        return [_release(r) for r in rows]

    async def mark_tagged(self, release_id: UUID) -> None:
        with translate_errors(f"marking release {release_id} tagged"):
            done = await self._pool.fetchval(_SQL_MARK_TAGGED, release_id)
        if done is None:
            raise NotFoundError(f"release {release_id} does not exist", details={"release_id": str(release_id)})


def _release(row: asyncpg.Record, *, repository: str | None = None) -> Release:
    """A release row with its aggregated ``aliases`` (alias, type) and ``artifacts`` records."""
    values: dict[str, Any] = {name: row[name] for name in _COLUMNS}
    values["repository"] = repository if repository is not None else row["repository"]
    values["aliases"] = [{"alias": alias, "type": kind} for alias, kind in row["aliases"]]
    values["artifacts"] = [
        {
            "id": a[0],
            "release_id": row["id"],
            "name": a[1],
            "type": a[2],
            "tracking_ref": a[3],
            "tracking_digest": a[4],
            "published": json.loads(a[5]),
            "created_at": a[6],
            "updated_at": a[7],
        }
        for a in row["artifacts"]
    ]
    try:
        return Release.model_validate(values)
    except ValueError as exc:  # a row the schema allowed but the domain rejects: a bug, say which
        raise ForgeError(f"Release row {row['id']} is invalid: {exc}") from exc


_COLUMNS = (
    "id",
    "project",
    "commit_sha",
    "number",
    "oci_ref",
    "oci_digest",
    "trigger",
    "branch",
    "tag",
    "run_id",
    "created_by",
    "created_at",
    "updated_at",
    "tagged_at",
)


async def _name_with_tag(
    conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], repository_id: UUID, new: NewRelease, release_id: UUID
) -> None:
    """A tag pushed on an already released commit names that release (a new ``tag`` alias)."""
    assert new.tag is not None
    holder = await conn.fetchrow(
        "SELECT a.release_id, r.number FROM release_aliases a JOIN releases r ON r.id = a.release_id "
        "WHERE a.repository_id = $1 AND a.project = $2 AND a.alias = $3",
        repository_id,
        new.project,
        new.tag,
    )
    if holder is None:
        await conn.execute(
            "INSERT INTO release_aliases (release_id, repository_id, project, alias, type) "
            "VALUES ($1, $2, $3, $4, 'tag')",
            release_id,
            repository_id,
            new.project,
            new.tag,
        )
    elif holder["release_id"] != release_id:
        raise alias_conflict(new, ReleaseAlias(alias=new.tag, type=AliasType.TAG), holder["number"])

"""``ReleaseStore`` in memory, mixed into ``MemoryStore``: the rules of ``forge.adapters._postgres_releases``
one for one (numbering, idempotency, alias clashes, ref resolution, orderings, ``now()`` stamps).

Each method checks its input, then passes one checkpoint (``_enter``) and runs to its end without
awaiting again, so it is one transaction and numbering needs no lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from forge.domain.entities import AliasType, Release, ReleaseAlias, ReleaseArtifact, Trigger
from forge.errors import NotFoundError
from forge.ports.fakes._memory_rows import Tables, check_text, jsonb
from forge.ports.store import (
    ALIAS_ORDER,
    NewRelease,
    Page,
    ReleaseFilter,
    alias_conflict,
    ambiguous_ref,
    check_page,
    check_release_ref,
    no_release,
)

__all__ = ["MemoryReleases", "ReleaseTables"]

_CANDIDATES = 10  # as PostgresReleases


@dataclass(slots=True)
class _ArtifactRow:
    id: UUID
    name: str
    type: str
    tracking_ref: str
    tracking_digest: str
    published: str  # jsonb text
    created_at: datetime


@dataclass(slots=True)
class _ReleaseRow:
    id: UUID
    repository_id: UUID
    project: str
    commit_sha: str
    number: int
    oci_ref: str
    oci_digest: str
    trigger: str
    branch: str | None
    tag: str | None
    run_id: UUID | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    aliases: tuple[ReleaseAlias, ...]
    artifacts: list[_ArtifactRow] = field(default_factory=list)
    tagged_at: datetime | None = None


class ReleaseTables:
    """The rows of ``releases``, ``release_aliases`` and ``release_artifacts`` and their unique keys."""

    def __init__(self) -> None:
        self.rows: dict[UUID, _ReleaseRow] = {}
        self.by_commit: dict[tuple[UUID, str, str], UUID] = {}
        self.by_alias: dict[tuple[UUID, str, str], UUID] = {}
        self.highest: dict[tuple[UUID, str], int] = {}


class MemoryReleases:
    """The ``ReleaseStore`` methods of ``MemoryStore`` (which provides the tables and the checkpoint)."""

    _t: Tables
    _rt: ReleaseTables

    async def _enter(self, what: str) -> datetime:
        raise NotImplementedError  # MemoryStore's

    async def record_release(self, new: NewRelease) -> tuple[Release, bool]:
        new.check()
        what = new.what
        now = await self._enter(what)
        check_text(what, new.oci_ref, new.created_by)
        for a in new.artifacts:
            check_text(what, a.name, a.tracking_ref, a.tracking_digest)
        published = [jsonb(what, [dict(p) for p in a.published]) or "[]" for a in new.artifacts]
        repo_id = self._t.repository_by_name.get(new.repository)
        if repo_id is None:
            raise NotFoundError(
                f"{what}: repository {new.repository!r} is not registered", details={"repository": new.repository}
            )
        existing = self._rt.by_commit.get((repo_id, new.project, new.commit_sha))
        if existing is not None:
            if new.tag is not None:  # a tag pushed on an already released commit names that release
                holder = self._rt.by_alias.get((repo_id, new.project, new.tag))
                if holder is None:
                    row = self._rt.rows[existing]
                    tag = ReleaseAlias(alias=new.tag, type=AliasType.TAG)
                    row.aliases = tuple(sorted((*row.aliases, tag), key=_alias_key))
                    self._rt.by_alias[repo_id, new.project, new.tag] = existing
                elif holder != existing:
                    raise alias_conflict(
                        new, ReleaseAlias(alias=new.tag, type=AliasType.TAG), self._rt.rows[holder].number
                    )
            return self._release(self._rt.rows[existing]), False
        number = self._rt.highest.get((repo_id, new.project), 0) + 1
        aliases = new.aliases(number)
        for alias in aliases:
            holder = self._rt.by_alias.get((repo_id, new.project, alias.alias))
            if holder is not None:
                raise alias_conflict(new, alias, self._rt.rows[holder].number)
        if new.run_id is not None and new.run_id not in self._t.runs:
            raise NotFoundError(
                f'{what}: Key (run_id)=({new.run_id}) is not present in table "pipeline_runs".',
                details={"constraint": "releases_run_id_fkey", "table": "releases"},
            )
        row = _ReleaseRow(
            id=uuid4(),
            repository_id=repo_id,
            project=new.project,
            commit_sha=new.commit_sha,
            number=number,
            oci_ref=new.oci_ref,
            oci_digest=new.oci_digest,
            trigger=str(new.trigger),
            branch=new.branch,
            tag=new.tag,
            run_id=new.run_id,
            created_by=new.created_by,
            created_at=now,
            updated_at=now,
            aliases=tuple(sorted(aliases, key=_alias_key)),
            artifacts=[
                _ArtifactRow(uuid4(), a.name, str(a.type), a.tracking_ref, a.tracking_digest, text, now)
                for a, text in zip(new.artifacts, published, strict=True)
            ],
        )
        self._rt.rows[row.id] = row
        self._rt.by_commit[repo_id, row.project, row.commit_sha] = row.id
        self._rt.highest[repo_id, row.project] = number
        for alias in aliases:
            self._rt.by_alias[repo_id, row.project, alias.alias] = row.id
        return self._release(row), True

    async def get_release(self, repository: str, project: str, ref: str) -> Release:
        prefix = check_release_ref(ref)
        what = f"reading release {ref!r} of {repository}/{project}"
        await self._enter(what)
        check_text(what, repository, project)
        repo_id = self._t.repository_by_name.get(repository)
        if repo_id is None:
            raise no_release(repository, project, ref)
        hit = self._rt.by_alias.get((repo_id, project, ref))
        if hit is not None:
            return self._release(self._rt.rows[hit])
        found = [] if prefix is None else self._of_project(repo_id, project)
        found = sorted((r for r in found if r.commit_sha.startswith(prefix or "")), key=lambda r: r.number)
        if not found:
            raise no_release(repository, project, ref)
        if len(found) > 1:
            raise ambiguous_ref(repository, project, ref, [r.number for r in found[:_CANDIDATES]])
        return self._release(found[0])

    async def list_releases(self, flt: ReleaseFilter, *, limit: int, offset: int) -> Page[Release]:
        check_page(limit, offset)
        wanted = flt.conditions()
        await self._enter("listing releases")
        check_text("listing releases", *wanted.values())
        rows = [r for r in self._rt.rows.values() if all(self._column(r, k) == v for k, v in wanted.items())]
        rows.sort(key=lambda r: r.id)
        rows.sort(key=lambda r: (r.created_at, r.number), reverse=True)  # stable: by id within a tie
        return Page([self._release(r) for r in rows[offset : offset + limit]], len(rows), limit, offset)

    async def releases_to_tag(self, *, limit: int) -> list[Release]:
        check_page(limit, 0)
        await self._enter("listing releases to tag")
        rows = sorted((r for r in self._rt.rows.values() if r.tagged_at is None), key=lambda r: (r.created_at, r.id))
        return [self._release(r) for r in rows[:limit]]

    async def mark_tagged(self, release_id: UUID) -> None:
        now = await self._enter(f"marking release {release_id} tagged")
        row = self._rt.rows.get(release_id)
        if row is None:
            raise NotFoundError(f"release {release_id} does not exist", details={"release_id": str(release_id)})
        row.tagged_at = row.tagged_at or now
        row.updated_at = now  # the trigger of every UPDATE

    def _of_project(self, repo_id: UUID, project: str) -> list[_ReleaseRow]:
        return [r for r in self._rt.rows.values() if r.repository_id == repo_id and r.project == project]

    def _column(self, row: _ReleaseRow, key: str) -> str | None:
        """The text a ``ReleaseFilter`` condition compares with."""
        if key == "repository":
            return self._t.repositories[row.repository_id].name
        value = getattr(row, key)
        return None if value is None else str(value)

    def _release(self, row: _ReleaseRow) -> Release:
        return Release(
            id=row.id,
            repository=self._t.repositories[row.repository_id].name,
            project=row.project,
            commit_sha=row.commit_sha,
            number=row.number,
            oci_ref=row.oci_ref,
            oci_digest=row.oci_digest,
            trigger=Trigger(row.trigger),
            branch=row.branch,
            tag=row.tag,
            aliases=row.aliases,
            artifacts=tuple(
                ReleaseArtifact.model_validate(
                    {
                        "id": a.id,
                        "release_id": row.id,
                        "name": a.name,
                        "type": a.type,
                        "tracking_ref": a.tracking_ref,
                        "tracking_digest": a.tracking_digest,
                        "published": json.loads(a.published),
                        "created_at": a.created_at,
                        "updated_at": a.created_at,
                    }
                )
                for a in sorted(row.artifacts, key=lambda a: a.name)
            ),
            run_id=row.run_id,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            tagged_at=row.tagged_at,
        )


def _alias_key(alias: ReleaseAlias) -> tuple[int, str]:
    return ALIAS_ORDER.index(alias.type), alias.alias

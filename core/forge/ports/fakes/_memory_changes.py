"""The ``run_changes`` table of the in-memory store (``0004_run_changes.sql``): recorded by every write
that changes a status, with ``PostgresStore``'s ids (one counter for the store, growing), bodies
(``forge.ports.changes``) and prune; a NOTIFY per changed run goes to the store's change listeners.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from forge.domain.status import Status
from forge.ports.changes import CHANGES_KEPT, NewChange
from forge.ports.fakes._memory_rows import ChangeRow, PhaseRow, StepRow, Tables, TaskRow
from forge.ports.store import ChangeKind, RunChange

__all__ = ["changes_since", "last_change", "prune_changes", "record_changes", "values_of"]


def values_of(row: PhaseRow | TaskRow | StepRow) -> dict[str, Any]:
    """A row's columns by name, as ``forge.ports.changes`` reads them."""
    return {f.name: getattr(row, f.name) for f in fields(row)}


def record_changes(tables: Tables, changes: Iterable[NewChange], now: datetime) -> None:
    """Insert ``changes`` in order and notify each run once (the call is one transaction: listeners run
    only after it returns, as a NOTIFY is delivered at COMMIT)."""
    runs: list[UUID] = []
    for change in changes:
        tables.last_change_id += 1
        row = ChangeRow(
            tables.last_change_id,
            change.run_id,
            change.kind,
            change.entity_id,
            change.status,
            json.dumps(change.body),
            now,
        )
        tables.changes_of.setdefault(change.run_id, []).append(row)
        if change.run_id not in runs:
            runs.append(change.run_id)
    for run_id in runs:
        for listener in list(tables.change_listeners):
            listener(run_id)


def changes_since(tables: Tables, run_id: UUID, after: int, limit: int) -> list[RunChange]:
    rows = tables.changes_of.get(run_id, [])
    start = bisect.bisect_right(rows, after, key=lambda r: r.id)
    return [
        RunChange(r.id, r.run_id, cast(ChangeKind, r.kind), r.entity_id, Status(r.status), json.loads(r.body), r.at)
        for r in rows[start : start + limit]
    ]


def last_change(tables: Tables, run_id: UUID) -> int:
    rows = tables.changes_of.get(run_id)
    return rows[-1].id if rows else 0


def prune_changes(tables: Tables, now: datetime) -> None:
    """Delete the changes of runs that finished more than ``CHANGES_KEPT`` ago."""
    cutoff = now - CHANGES_KEPT
    for run_id, rows in list(tables.changes_of.items()):
        run = tables.runs[run_id]
        if run.status.is_final and run.completed_at is not None and run.completed_at < cutoff:
            kept = [r for r in rows if r.at >= cutoff]
            if kept:
                tables.changes_of[run_id] = kept
            else:
                del tables.changes_of[run_id]

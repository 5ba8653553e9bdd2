"""PostgreSQL rows to domain entities, and asyncpg errors to the Forge error tree, each in one place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
from pydantic import ValidationError

from forge.domain.entities import PhaseExecution, PipelineRun, Repository, StepExecution, TaskExecution
from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    TransientError,
)
from forge.ports.store import ExecutionDetail

__all__ = [
    "RUN_COLUMNS",
    "detail_from_row",
    "init_connection",
    "phase_from_row",
    "repository_from_row",
    "run_from_row",
    "step_from_row",
    "task_from_row",
    "translate_errors",
]

_M = TypeVar("_M", Repository, PipelineRun, PhaseExecution, TaskExecution, StepExecution)
_REPOSITORY_FIELDS = tuple(Repository.model_fields)
_RUN_FIELDS = tuple(PipelineRun.model_fields)
_TASK_FIELDS = tuple(TaskExecution.model_fields)
_STEP_FIELDS = tuple(StepExecution.model_fields)
#: ``PhaseExecution.group`` is the column ``group_number`` (``group`` is an SQL keyword).
_PHASE_COLUMNS = {name: "group_number" if name == "group" else name for name in PhaseExecution.model_fields}

#: The columns of ``pipeline_runs r`` joined with ``repositories repo`` that make a ``PipelineRun``.
RUN_COLUMNS = ", ".join(f"r.{name}" if name != "repository" else "repo.name AS repository" for name in _RUN_FIELDS)


async def init_connection(conn: asyncpg.Connection[Any]) -> None:
    """jsonb in and out as Python objects."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def repository_from_row(row: asyncpg.Record) -> Repository:
    return _build(Repository, row, _REPOSITORY_FIELDS)


def run_from_row(row: asyncpg.Record) -> PipelineRun:
    return _build(PipelineRun, row, _RUN_FIELDS)


def phase_from_row(row: asyncpg.Record) -> PhaseExecution:
    try:
        return PhaseExecution.model_validate({name: row[column] for name, column in _PHASE_COLUMNS.items()})
    except ValidationError as exc:
        raise ForgeError(f"PhaseExecution row {row.get('id')} is invalid: {exc}") from exc


def task_from_row(row: asyncpg.Record) -> TaskExecution:
    return _build(TaskExecution, row, _TASK_FIELDS)


def step_from_row(row: asyncpg.Record) -> StepExecution:
    return _build(StepExecution, row, _STEP_FIELDS)


def detail_from_row(row: asyncpg.Record) -> ExecutionDetail:
    """Timestamps of a phase, task or step row, and the message of a step row."""
    return ExecutionDetail(row["started_at"], row["completed_at"], row.get("message"))


def _build(model: type[_M], row: asyncpg.Record, fields: tuple[str, ...]) -> _M:
    try:
        return model.model_validate({name: row[name] for name in fields})
    except ValidationError as exc:  # a row the schema allowed but the domain rejects: a bug, say which
        raise ForgeError(f"{model.__name__} row {row.get('id')} is invalid: {exc}") from exc


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Map asyncpg and socket errors raised while doing ``what`` to the Forge error tree."""
    try:
        yield
    except ForgeError:
        raise
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(
            f"{what}: {exc.detail or exc}", details={"constraint": exc.constraint_name, "table": exc.table_name}
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFoundError(
            f"{what}: {exc.detail or exc}", details={"constraint": exc.constraint_name, "table": exc.table_name}
        ) from exc
    except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as exc:
        # Never the server's DETAIL ("Failing row contains (…)"): it would echo the whole row, secrets
        # references and URLs included, into a message that can reach API clients.
        where = exc.constraint_name or exc.column_name or "a constraint"
        raise InvalidInputError(
            f"{what}: the value violates {where} of {exc.table_name or 'the table'}",
            details={"constraint": exc.constraint_name, "table": exc.table_name, "column": exc.column_name},
        ) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise ConflictError(f"{what}: {exc}", details={"constraint": exc.constraint_name}) from exc
    except asyncpg.DataError as exc:  # invalid text representation, value out of range, ...
        raise InvalidInputError(f"{what}: {exc}") from exc
    except asyncpg.TransactionRollbackError as exc:  # deadlock or serialization failure: try again
        raise TransientError(f"{what}: {exc}", retry_after=0.1, code="transaction_rollback") from exc
    except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError) as exc:
        raise ServiceUnavailableError(f"{what}: the database is not usable (not migrated?): {exc}") from exc
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InsufficientResourcesError,
        asyncpg.exceptions.InvalidCatalogNameError,
        asyncpg.exceptions.InvalidAuthorizationSpecificationError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # a connection that died while the pool released it
    ) as exc:
        raise ServiceUnavailableError(f"{what}: PostgreSQL is unavailable: {exc}", retry_after=1.0) from exc

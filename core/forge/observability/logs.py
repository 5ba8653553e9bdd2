"""Structured logs: one JSON object per line with the trace and run a record belongs to.

``FORGE_LOG_FORMAT=json`` selects :class:`JsonFormatter` (``forge.runtime.configure_logging``); the
default stays the one-line text for humans. Fields: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``service`` (the process: ``forge-api``, ``forge-controller``, ``forge-worker-ci``…),
``logger``, ``message``, ``run_id`` when the code that logged acts on a run (:data:`current_run`,
set by the reconcile loop and the worker around each run's work), ``trace_id``/``span_id`` (hex, as
Tempo and Loki's derived fields expect) when a span is current, and ``exception`` with the
traceback. Loki parses them with ``| json``; the trace id of a run is the run id without dashes.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from opentelemetry import trace

__all__ = ["JsonFormatter", "current_run"]

current_run: ContextVar[UUID | None] = ContextVar("forge_current_run", default=None)
"""The run the current task acts on (logged as ``run_id``)."""


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = current_run.get()
        if run_id is not None:
            entry["run_id"] = str(run_id)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)

"""JSON logs carry the service, the run and the trace of what logged."""

from __future__ import annotations

import json
import logging
from uuid import uuid4

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from forge.observability.logs import JsonFormatter, current_run
from forge.observability.tracing import parent_for, tracer


def _record(message: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord("forge.worker", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_record_outside_a_run_is_plain_json() -> None:
    entry = json.loads(JsonFormatter("forge-api").format(_record("ready")))
    assert entry["service"] == "forge-api"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "forge.worker"
    assert entry["message"] == "ready"
    assert "run_id" not in entry
    assert "trace_id" not in entry


def test_a_record_inside_a_runs_span_names_the_run_and_its_trace(spans: InMemorySpanExporter) -> None:
    run = uuid4()
    token = current_run.set(run)
    try:
        with tracer().start_as_current_span("job ci", context=parent_for(run)):
            entry = json.loads(JsonFormatter("forge-worker-ci").format(_record("step failed", exc=True)))
    finally:
        current_run.reset(token)
    assert entry["run_id"] == str(run)
    assert entry["trace_id"] == run.hex  # the trace id of a run is its id
    assert len(entry["span_id"]) == 16
    assert "ValueError: boom" in entry["exception"]

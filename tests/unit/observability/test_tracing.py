"""Where a span about a run hangs: the current span of the run, a received traceparent, else the root."""

from __future__ import annotations

from uuid import uuid4

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from forge.observability.tracing import inject, parent_for, root_span_id, run_context, tracer


def _parent_span_id(context: object) -> int:
    return trace.get_current_span(context).get_span_context().span_id  # type: ignore[arg-type]


def test_without_anything_current_the_parent_is_the_runs_root() -> None:
    run = uuid4()
    assert _parent_span_id(parent_for(run)) == root_span_id(run)
    assert trace.get_current_span(run_context(run)).get_span_context().trace_id == run.int


def test_a_received_traceparent_of_the_run_is_the_parent(spans: InMemorySpanExporter) -> None:
    run = uuid4()
    headers: dict[str, str] = {}
    with tracer().start_as_current_span("dispatch ci", context=run_context(run)) as sent:
        inject(headers)
    assert headers["traceparent"].split("-")[1] == run.hex
    assert _parent_span_id(parent_for(run, headers)) == sent.get_span_context().span_id
    other = uuid4()
    assert _parent_span_id(parent_for(other, headers)) == root_span_id(other)  # another run's context: not ours


def test_the_current_span_of_the_run_wins(spans: InMemorySpanExporter) -> None:
    run = uuid4()
    with tracer().start_as_current_span("reconcile execution", context=run_context(run)) as current:
        assert _parent_span_id(parent_for(run, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})) == (
            current.get_span_context().span_id
        )


def test_no_current_span_injects_nothing() -> None:
    headers: dict[str, str] = {}
    inject(headers)
    assert headers == {}

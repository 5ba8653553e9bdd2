"""Traces: one trace per run, whose trace id *is* the run id (docs/operations.md, "Traces").

Why the run id: a run crosses processes through PostgreSQL (API → controller), NATS headers
(controller → worker) and Argo (controller → step pod). NATS headers carry W3C ``traceparent``, but
a run row has no column for a context, so every process derives the run's trace from its id
instead: trace id = the run UUID's 128 bits, and the run's root span (the API request that created
the run) has the span id :func:`root_span_id` of the run. Any span about a run is parented to the
current span when that belongs to the run's trace, else to a ``traceparent`` it received, else to
the root. An operator pastes a run id (without dashes) into Tempo or Jaeger and gets its trace.

Exported by OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set
(:func:`configure_tracing`; the OpenTelemetry SDK reads the rest of the standard ``OTEL_*``
variables). Otherwise nothing is traced: :func:`run_span` is a shared no-op context manager (no span,
no parent looked up, no ``traceparent`` written into job headers), so the job path pays nothing for
tracing that is off; the SDK and the exporter are never imported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

__all__ = [
    "ENDPOINT_VARIABLES",
    "configure_tracing",
    "forced_ids",
    "inject",
    "parent_for",
    "root_span_id",
    "run_context",
    "run_id_of_trace",
    "run_span",
    "tracer",
    "tracing_enabled",
]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_forced: ContextVar[tuple[int, int] | None] = ContextVar("forge_forced_span_ids", default=None)
_enabled = False
_tracer: trace.Tracer | None = None
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def tracer() -> trace.Tracer:
    """The platform's tracer, looked up once (before :func:`configure_tracing` it is the API's proxy,
    which follows the provider installed later)."""
    global _tracer  # noqa: PLW0603 - a cache of the one tracer
    if _tracer is None:
        _tracer = trace.get_tracer("forge")
    return _tracer


def run_span(
    name: str,
    run_id: UUID,
    *,
    kind: SpanKind,
    attributes: Attributes = None,
    headers: Mapping[str, str] | None = None,
) -> AbstractContextManager[Any]:
    """A span about ``run_id``, current inside (its parent: :func:`parent_for`); when tracing is off, a
    shared no-op context manager: no span object, no parent looked up, ``headers`` never parsed."""
    if not _enabled:
        return _NO_SPAN
    return tracer().start_as_current_span(name, context=parent_for(run_id, headers), kind=kind, attributes=attributes)


def tracing_enabled() -> bool:
    """Whether spans are exported by this process (the API's middleware skips its work otherwise)."""
    return _enabled


def root_span_id(run_id: UUID) -> int:
    """The span id of a run's root span: its low 64 bits (never 0, an invalid span id)."""
    return (run_id.int & 0xFFFF_FFFF_FFFF_FFFF) or 1


def run_id_of_trace(trace_id: int) -> UUID:
    return UUID(int=trace_id)


def run_context(run_id: UUID) -> otel_context.Context:
    """A context whose parent is the run's root span (trace id = run id)."""
    parent = SpanContext(
        trace_id=run_id.int, span_id=root_span_id(run_id), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def parent_for(run_id: UUID, headers: Mapping[str, str] | None = None) -> otel_context.Context:
    """The parent of a span about ``run_id``: the current span, a received ``traceparent``, else the root."""
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == run_id.int:
        return otel_context.get_current()
    if headers:
        received = propagate.extract(carrier=dict(headers))
        if trace.get_current_span(received).get_span_context().trace_id == run_id.int:
            return received
    return run_context(run_id)


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current span's ``traceparent`` (W3C) into message headers; nothing when there is none."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


@contextlib.contextmanager
def forced_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """The next root span started in this context gets these ids (a run's root span: the API request)."""
    token = _forced.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced.reset(token)


def configure_tracing(service_name: str, *, exporter: Any = None) -> bool:
    """Install the SDK's tracer provider when an OTLP endpoint is configured, or with ``exporter`` (tests:
    spans are then exported one by one as they end); ``False`` and nothing imported otherwise. OTLP spans
    are batched (``OTEL_BSP_*``) and flushed when the process exits. Once per process: later calls keep
    the first provider."""
    global _enabled  # noqa: PLW0603 - one provider per process, set once at start
    if _enabled:
        return True
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if exporter is None and (disabled or not any(os.environ.get(v) for v in ENDPOINT_VARIABLES)):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from forge.observability._ids import RunIdGenerator

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource, id_generator=RunIdGenerator(_forced))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True

"""The SDK id generator that lets a run's root span take the run's ids (imported with the SDK only)."""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

__all__ = ["RunIdGenerator"]


class RunIdGenerator(RandomIdGenerator):
    """Random ids, except inside ``forced_ids(trace_id, span_id)``: a root span started there gets those.

    The SDK asks for a trace id only for a root span (a child inherits its parent's), and for a span
    id right after; the forced pair is used once, so spans started later in the context are random.
    """

    def __init__(self, forced: ContextVar[tuple[int, int] | None]) -> None:
        self._forced = forced
        self._pending_span: ContextVar[int | None] = ContextVar("forge_pending_span_id", default=None)

    def generate_trace_id(self) -> int:
        forced = self._forced.get()
        if forced is None:
            return super().generate_trace_id()
        self._pending_span.set(forced[1])
        return forced[0]

    def generate_span_id(self) -> int:
        pending = self._pending_span.get()
        if pending is None:
            return super().generate_span_id()
        self._pending_span.set(None)
        return pending

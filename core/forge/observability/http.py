"""API requests: counts and latency by route template and status, and one server span per request.

:class:`ObservedRequests` is a plain ASGI middleware (the API adds it to its Litestar app). The
route label is Litestar's path template (``/v1/runs/{run_id}``), never the path, so the series stay
few; a request no route matched is not seen here (Litestar answers 404 before any middleware).

Spans (only when tracing is on) are started when the response is known: a request that created a
run becomes that run's root span (trace id = run id, ``forge.observability.tracing``), linked to the
client's ``traceparent`` if it sent one; a request answered with an existing run joins its trace;
every other request continues the client's trace or starts one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from forge.observability.tracing import forced_ids, root_span_id, run_context, tracer, tracing_enabled

__all__ = ["REQUESTS", "REQUEST_DURATION", "ObservedRequests", "note_run"]

REQUESTS = Counter(
    "forge_api_requests", "API requests answered, by method, route template and status", ["method", "route", "status"]
)
REQUEST_DURATION = Histogram(
    "forge_api_request_duration_seconds",
    "Seconds from a request's arrival to its response's end, by method and route template",
    ["method", "route"],
)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
App = Callable[[Any, Receive, Send], Awaitable[None]]


@dataclass
class _RunNote:
    run_id: UUID | None = None
    created: bool = False


_note: ContextVar[_RunNote | None] = ContextVar("forge_request_run", default=None)


def note_run(run_id: UUID, *, created: bool) -> None:
    """Tell the request being served that it created (or found) ``run_id`` (its span joins the run's trace)."""
    note = _note.get()
    if note is not None:
        note.run_id, note.created = run_id, created


class ObservedRequests:
    """ASGI middleware: Prometheus series of every HTTP request, and its span when tracing is on.

    Litestar builds one instance per route. Each keeps the series' children it has counted into
    (``labels()`` takes a lock and builds its key on every call); without tracing a request costs a
    clock read, a ``send`` wrapper and the two updates.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if tracing_enabled():
            await self._traced(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._count(scope, status, time.perf_counter() - started)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, started_ns = time.perf_counter(), time.time_ns()
        status = 500

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        note = _RunNote()
        token = _note.set(note)
        try:
            await self.app(scope, receive, send_observed)
        finally:
            _note.reset(token)
            method, route = self._count(scope, status, time.perf_counter() - started)
            _span(scope, method, route, status, started_ns, note)

    def _count(self, scope: Scope, status: int, seconds: float) -> tuple[str, str]:
        method, route = str(scope.get("method", "")), str(scope.get("path_template") or "unmatched")
        counted = self._counts.get((method, route, status))
        if counted is None:
            counted = self._counts[method, route, status] = REQUESTS.labels(method, route, str(status))
        counted.inc()
        timed = self._durations.get((method, route))
        if timed is None:
            timed = self._durations[method, route] = REQUEST_DURATION.labels(method, route)
        timed.observe(seconds)
        return method, route


def _span(scope: Scope, method: str, route: str, status: int, started_ns: int, note: _RunNote) -> None:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    incoming = propagate.extract(carrier=headers)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "http.route": route,
        "http.response.status_code": status,
    }
    name = f"{method} {route}"
    if note.run_id is not None:
        attributes["forge.run_id"] = str(note.run_id)
    if note.run_id is not None and note.created:
        client = trace.get_current_span(incoming).get_span_context()
        links = [Link(client)] if client.is_valid else []
        with forced_ids(note.run_id.int, root_span_id(note.run_id)):
            span = tracer().start_span(
                name,
                context=otel_context.Context(),
                kind=SpanKind.SERVER,
                attributes=attributes,
                links=links,
                start_time=started_ns,
            )
    else:
        parent = run_context(note.run_id) if note.run_id is not None else incoming
        span = tracer().start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes, start_time=started_ns
        )
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()

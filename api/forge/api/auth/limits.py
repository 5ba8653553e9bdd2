"""Rate limits on what starts work: runs per identity and per repository, webhook deliveries per repository.

Each limit is a token bucket per key: ``per_minute`` tokens refill evenly, the bucket holds at most
``per_minute`` (a quiet client may send a minute's worth at once), and a request that finds it empty
is refused with :class:`RateLimitedError` → 429 with ``Retry-After`` (whole seconds until a token is
back) and an ``application/problem+json`` body naming the limit.

- ``POST /v1/runs`` and ``POST /v1/releases``: per token subject (``rate_limit_runs``), then per
  repository of the body (``rate_limit_repository_runs``);
- ``POST /v1/webhooks/github`` with a valid signature: per repository (``rate_limit_webhooks``).

Where the buckets live is a port (``forge.ports.limits.RateLimiter``). ``forge-api`` keeps them in
PostgreSQL (``forge.adapters.postgres_limits``: one atomic statement per take, on the database's
clock), so a limit holds across every API replica, not once per replica; an app built without a
database (tests) keeps them in its process (``MemoryRateLimiter``). ``0`` disables a limit (no
bucket is touched).

**When the bucket store fails, the request goes through** (fail open): PostgreSQL down or slower than
the adapter's timeout (1 s) during a take is logged as a warning and counted in
``forge_rate_limit_store_errors_total{limit}``, and the request is not limited. Rate limits protect
capacity; they are not an authorization check (the guard has already authenticated and authorized the
request), and a 500 or 503 for every run because the limiter's table could not be reached would turn
a degraded database into an outage of run creation — which needs PostgreSQL anyway, and answers 503 on
its own if it is really gone.

Why not Litestar's ``RateLimitConfig``: it keys by client address and counts fixed windows in a
store; Forge keys by the verified identity and by a repository read from the body, which only the
guard (after authentication) and the webhook handler (after the signature) know. Webhooks are
counted after the signature is checked, so forged deliveries cannot spend a repository's budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Schema
from prometheus_client import Counter

from forge.api.errors import PROBLEM_JSON, ProblemOut, RateLimitedError
from forge.errors import TransientError
from forge.ports.fakes.memory_limits import MemoryRateLimiter
from forge.ports.limits import RateLimiter, check_per_minute, retry_after
from forge.ports.others import Identity
from forge.settings import ApiSettings

__all__ = [
    "LIMITED",
    "STORE_ERRORS",
    "RateLimits",
    "body_repository",
    "document_limits",
    "document_retry_after",
    "rate_limits_of",
]

LIMITED = frozenset({("POST", "/v1/runs"), ("POST", "/v1/releases"), ("POST", "/v1/webhooks/github")})
"""The operations that may answer 429 (documented in the OpenAPI)."""
_RUNS = frozenset({("POST", "/v1/runs"), ("POST", "/v1/releases")})
_STATE_KEY = "forge_rate_limits"
STORE_ERRORS = Counter(
    "forge_rate_limit_store_errors",
    "Requests let through unlimited because the rate-limit buckets could not be read (PostgreSQL down or slow)",
    ["limit"],
)
_log = logging.getLogger("forge.api.limits")


@dataclass(slots=True)
class RateLimits:
    """The API's limits (``FORGE_API__RATE_LIMIT_*``); per minute, ``0`` for none; ``buckets``: where they live."""

    runs: float = 120  # the defaults of ApiSettings
    repository_runs: float = 300
    webhooks: float = 300
    buckets: RateLimiter = field(default_factory=MemoryRateLimiter)

    def __post_init__(self) -> None:
        for name in ("runs", "repository_runs", "webhooks"):  # a bad setting fails at start, not per request
            check_per_minute(getattr(self, name), f"rate limit {name}")

    @classmethod
    def from_settings(cls, api: ApiSettings, buckets: RateLimiter | None = None) -> RateLimits:
        """The limits of the settings, in ``buckets`` (this process's when ``None``)."""
        return cls(
            runs=api.rate_limit_runs,
            repository_runs=api.rate_limit_repository_runs,
            webhooks=api.rate_limit_webhooks,
            buckets=MemoryRateLimiter() if buckets is None else buckets,
        )

    def install(self, app: Litestar) -> None:
        app.state[_STATE_KEY] = self

    async def check(self, connection: ASGIConnection[Any, Any, Any, Any], who: Identity) -> None:
        """For the guard, after authentication: limit run creation by identity, then by repository."""
        method, template = connection.scope["method"], connection.scope["path_template"]  # type: ignore[typeddict-item]
        if (method, template) not in _RUNS:
            return
        await self._spend("runs", who.subject, f"runs created by {who.subject}", self.runs)
        repository = await body_repository(connection)
        if repository is not None:
            await self._spend("repository_runs", repository.lower(), f"runs of {repository}", self.repository_runs)

    async def webhook(self, repository: str) -> None:
        """For the webhook handler, after the signature: limit deliveries by repository."""
        await self._spend("webhooks", repository.lower(), f"webhook deliveries for {repository}", self.webhooks)

    async def _spend(self, limit: str, key: str, what: str, per_minute: float) -> None:
        if per_minute == 0:
            return
        try:
            wait = await self.buckets.take(limit, key, per_minute)
        except TransientError as exc:  # fail open: see the module docstring
            STORE_ERRORS.labels(limit).inc()
            _log.warning("rate limit %s not checked for %s, request let through: %s", limit, what, exc)
            return
        if wait is not None:
            seconds = retry_after(wait)
            raise RateLimitedError(
                f"too many requests: {what} are limited to {per_minute:g} per minute; retry in {seconds} s",
                retry_after=seconds,
                details={"limit_per_minute": per_minute},
            )


def rate_limits_of(app: Litestar) -> RateLimits | None:
    limits = app.state.get(_STATE_KEY)
    return limits if isinstance(limits, RateLimits) else None


async def body_repository(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The ``repository`` of a JSON body (cached by Litestar for the handler); ``None`` when there is none."""
    body = getattr(connection, "body", None)
    if body is None:
        return None
    try:
        data = json.loads(await body())
    except (ValueError, UnicodeDecodeError):
        return None  # the handler answers the malformed body
    repository = data.get("repository") if isinstance(data, Mapping) else None
    return repository[:200] if isinstance(repository, str) and repository else None


def document_limits(app: Litestar) -> None:
    """Give every limited operation its 429 response (problem+json with ``Retry-After``).

    Called before the OpenAPI document is built; :func:`document_retry_after` adds the header after.
    """
    too_many = ResponseSpec(
        ProblemOut,
        description="Rate limited: retry after the seconds of the Retry-After header",
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if any((method, route.path_format) in LIMITED for method in handler.http_methods):
                handler.responses = {**(handler.responses or {}), 429: too_many}


def document_retry_after(app: Litestar) -> None:
    """Name the ``Retry-After`` header of every documented 429 (Litestar's ResponseSpec has no headers)."""
    header = OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER, minimum=1), description="Seconds to wait", required=True
    )
    for item in (app.openapi_schema.paths or {}).values():
        for operation in (item.get, item.post, item.put, item.patch, item.delete):
            response = (operation.responses or {}).get("429") if operation is not None else None
            if isinstance(response, OpenAPIResponse):
                response.headers = {**(response.headers or {}), "Retry-After": header}

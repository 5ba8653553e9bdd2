"""Rate limits on what starts work: runs per identity and per repository, webhook deliveries per repository.

Each limit is a token bucket per key (:class:`TokenBucket`): ``per_minute`` tokens refill evenly, the
bucket holds at most ``per_minute`` (a quiet client may send a minute's worth at once), and a
request that finds it empty is refused with :class:`RateLimitedError` → 429 with ``Retry-After``
(whole seconds until a token is back) and an ``application/problem+json`` body naming the limit.

- ``POST /v1/runs`` and ``POST /v1/releases``: per token subject (``rate_limit_runs``), then per
  repository of the body (``rate_limit_repository_runs``);
- ``POST /v1/webhooks/github`` with a valid signature: per repository (``rate_limit_webhooks``).

Why not Litestar's ``RateLimitConfig``: it keys by client address and counts fixed windows in a
store; Forge keys by the verified identity and by a repository read from the body, which only the
guard (after authentication) and the webhook handler (after the signature) know. Webhooks are
counted after the signature is checked, so forged deliveries cannot spend a repository's budget.

The clock is injected (``time.monotonic`` by default), so tests step it instead of sleeping. Buckets
live in the API process (one bucket map per limit, idle full buckets dropped): with several API
replicas each enforces its own share. ``0`` disables a limit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Schema

from forge.api.errors import PROBLEM_JSON, ProblemOut, RateLimitedError
from forge.ports.others import Identity
from forge.settings import ApiSettings

__all__ = [
    "LIMITED",
    "RateLimits",
    "TokenBucket",
    "body_repository",
    "document_limits",
    "document_retry_after",
    "rate_limits_of",
]

LIMITED = frozenset({("POST", "/v1/runs"), ("POST", "/v1/releases"), ("POST", "/v1/webhooks/github")})
"""The operations that may answer 429 (documented in the OpenAPI)."""
_RUNS = frozenset({("POST", "/v1/runs"), ("POST", "/v1/releases")})
_MAX_KEYS = 100_000  # a flood of made-up names costs memory up to here, then full buckets are dropped
_STATE_KEY = "forge_rate_limits"


@dataclass(slots=True)
class TokenBucket:
    """Buckets of ``per_minute`` tokens keyed by name; :meth:`take` spends one or says how long to wait."""

    per_minute: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def take(self, key: str) -> float | None:
        """Spend a token of ``key``: ``None`` when one was there, else the seconds until one is."""
        if self.per_minute <= 0:
            return None
        now, rate = self.clock(), self.per_minute / 60.0
        tokens, at = self._buckets.get(key, (self.per_minute, now))
        tokens = min(self.per_minute, tokens + (now - at) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > _MAX_KEYS:
                self._forget_full(now, rate)
            return None
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    def _forget_full(self, now: float, rate: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * rate >= self.per_minute:
                del self._buckets[key]


@dataclass(slots=True)
class RateLimits:
    """The API's limits (``FORGE_API__RATE_LIMIT_*``); per minute, ``0`` for none."""

    runs: float = 120  # the defaults of ApiSettings
    repository_runs: float = 300
    webhooks: float = 300
    clock: Callable[[], float] = time.monotonic
    _identity: TokenBucket = field(init=False)
    _repository: TokenBucket = field(init=False)
    _webhooks: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self._identity = TokenBucket(self.runs, self.clock)
        self._repository = TokenBucket(self.repository_runs, self.clock)
        self._webhooks = TokenBucket(self.webhooks, self.clock)

    @classmethod
    def from_settings(cls, api: ApiSettings) -> RateLimits:
        return cls(
            runs=api.rate_limit_runs, repository_runs=api.rate_limit_repository_runs, webhooks=api.rate_limit_webhooks
        )

    def install(self, app: Litestar) -> None:
        app.state[_STATE_KEY] = self

    async def check(self, connection: ASGIConnection[Any, Any, Any, Any], who: Identity) -> None:
        """For the guard, after authentication: limit run creation by identity, then by repository."""
        method, template = connection.scope["method"], connection.scope["path_template"]  # type: ignore[typeddict-item]
        if (method, template) not in _RUNS:
            return
        self._spend(self._identity, who.subject, f"runs created by {who.subject}", self.runs)
        repository = await body_repository(connection)
        if repository is not None:
            self._spend(self._repository, repository.lower(), f"runs of {repository}", self.repository_runs)

    def webhook(self, repository: str) -> None:
        """For the webhook handler, after the signature: limit deliveries by repository."""
        self._spend(self._webhooks, repository.lower(), f"webhook deliveries for {repository}", self.webhooks)

    @staticmethod
    def _spend(bucket: TokenBucket, key: str, what: str, per_minute: float) -> None:
        wait = bucket.take(key)
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise RateLimitedError(
                f"too many requests: {what} are limited to {per_minute:g} per minute; retry in {retry_after} s",
                retry_after=retry_after,
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

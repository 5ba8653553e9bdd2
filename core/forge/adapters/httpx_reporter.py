"""``StatusReporter`` over the API's internal ``PUT /v1/steps/{id}/status`` (httpx).

Transient failures — no connection, a timeout, 5xx, 429 — are retried a few times with a short,
bounded backoff (``Retry-After`` is honoured up to ``max_delay``); then the last one is raised as a
``TransientError`` (``ServiceUnavailableError`` when the API could not be reached at all). Answers
map to the error tree at this boundary: 404 ``NotFoundError``, 409 ``ConflictError``, 400/422
``InvalidInputError``, any other 4xx ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx

from forge.domain.status import Status
from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)

__all__ = ["HttpStatusReporter"]

log = logging.getLogger(__name__)


class HttpStatusReporter:
    """The ``StatusReporter`` port on the API. ``from_url`` owns its client; ``aclose()`` when done."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        attempts: int = 3,
        backoff: float = 0.2,
        max_delay: float = 2.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._client = client
        self._attempts = attempts
        self._backoff = backoff
        self._max_delay = max_delay

    @classmethod
    def from_url(
        cls, base_url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None, **options: Any
    ) -> HttpStatusReporter:
        """A reporter with its own client for the API at ``base_url`` (``headers``: e.g. the service token)."""
        client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=dict(headers or {}))
        return cls(client, **options)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpStatusReporter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def step_status(
        self,
        step_id: UUID,
        status: Status,
        *,
        exit_code: int | None = None,
        attempt: int | None = None,
        logs_key: str | None = None,
        message: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": str(status)}
        optional = {"exit_code": exit_code, "attempt": attempt, "logs_key": logs_key, "message": message}
        body.update({k: v for k, v in optional.items() if v is not None})
        await self._put(f"/v1/steps/{step_id}/status", body, what=f"reporting step {step_id} {status}")

    async def _put(self, path: str, body: dict[str, Any], *, what: str) -> httpx.Response:
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.put(path, json=body)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                error: TransientError = ServiceUnavailableError(
                    f"{what}: the API cannot be reached: {exc!r}", retry_after=self._delay(attempt)
                )
            else:
                if response.is_success:
                    return response
                mapped = _error_of(response, what)
                if not isinstance(mapped, TransientError):
                    raise mapped
                error = mapped
            if attempt == self._attempts:
                raise error
            delay = min(self._max_delay, max(self._delay(attempt), error.retry_after or 0.0))
            log.warning("%s (attempt %d/%d), retrying in %.2fs", error, attempt, self._attempts, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _delay(self, attempt: int) -> float:
        return float(min(self._max_delay, self._backoff * 2 ** (attempt - 1)))


def _error_of(response: httpx.Response, what: str) -> ForgeError:
    """The Forge error an unsuccessful answer stands for (problem+json ``detail`` as the message)."""
    detail = _detail(response)
    message = f"{what}: HTTP {response.status_code}: {detail}"
    details = {"status_code": response.status_code}
    code = response.status_code
    if code == 404:
        return NotFoundError(message, details=details)
    if code == 409:
        return ConflictError(message, details=details)
    if code in {400, 422}:
        return InvalidInputError(message, details=details)
    if code == 429 or code >= 500:
        return TransientError(message, retry_after=_retry_after(response), details=details)
    return PermanentError(message, details=details)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None

"""What the HTTP adapters share: one translation of httpx outcomes into the error tree, one retry.

``http_error(response_or_transport_error, service=..., hints=...)`` maps::

    outcome                                           error                     retry_after
    connect error / connect or pool timeout           ServiceUnavailableError   -            never sent
    read/write timeout, other transport error         ServiceUnavailableError   -            maybe processed
    429; 403 with Retry-After or x-ratelimit-0        TransientError            Retry-After  code rate_limited
    502, 503, 504                                     ServiceUnavailableError   Retry-After
    other 5xx                                         TransientError            Retry-After
    401 / 403                                         PermanentError            -            unauthorized / forbidden
    404 / 409                                         NotFoundError / ConflictError
    400 / 422                                         InvalidInputError
    anything else                                     PermanentError

``Retry-After`` is read as seconds or as an HTTP-date; without it, a rate limit's
``x-ratelimit-reset`` (epoch seconds, GitHub's convention) is used. Messages carry the server's
own ``message`` (grpc-gateway and GitHub both answer ``{"message": ...}``), else the body's text;
``details`` carry ``status`` and ``request`` ("GET /path"), or ``transport`` (the httpx error).

``retry(call, policy, idempotent=...)`` runs ``call`` under stamina and retries ``TransientError``
only. A ``retry_after`` is the wait before the next attempt (stamina's backoff hook), unless it is
longer than ``policy.longest_retry_after``: then the error is raised at once and its caller (the
controller) decides when to come back. A non-idempotent call (``idempotent=False``) is retried only
when the request provably was not processed: it never left (connect errors), or the server refused
it (429, 503, a rate limit). In tests, ``stamina.set_testing(True, attempts=..., cap=True)`` keeps
the attempts and drops every wait.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import stamina

from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)

__all__ = ["RetryPolicy", "http_error", "retry", "retry_after", "send", "unprocessed"]

T = TypeVar("T")

_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_REFUSED = {429, 503}  # the server answered without processing the request
_PERMANENT: dict[int, type[PermanentError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidInputError,
}
_CHECK_CREDENTIALS = "check the credentials and their permissions"
_SECONDS = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one adapter call keeps trying (stamina's parameters, plus the longest Retry-After waited)."""

    attempts: int = 5
    timeout: float | None = 30.0
    wait_initial: float = 0.2
    wait_max: float = 5.0
    wait_jitter: float = 0.5
    longest_retry_after: float = 10.0


def http_error(
    failure: httpx.Response | httpx.TransportError, *, service: str, hints: Mapping[int, str] | None = None
) -> ForgeError:
    """The error-tree member for a failed response (not 2xx/3xx) or a transport failure.

    ``hints`` maps a status code to what the user should check, appended to the message
    (e.g. ``{403: "check the token's permissions"}``).
    """
    if isinstance(failure, httpx.TransportError):
        return _transport_error(failure, service)
    response = failure
    code = response.status_code
    request = f"{response.request.method} {response.request.url.path}"
    details: dict[str, Any] = {"status": code, "request": request}
    message = _message(response)
    hint = (hints or {}).get(code)
    rate_limited = code == 429 or (
        code == 403 and ("retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0")
    )
    if rate_limited:
        return TransientError(
            f"{service}: {request}: {code} rate limited: {message}",
            retry_after=retry_after(response.headers),
            code="rate_limited",
            details=details,
        )
    if code in {401, 403}:
        return PermanentError(
            f"{service} refused the request ({code}): {message}; {hint or _CHECK_CREDENTIALS}",
            code="unauthorized" if code == 401 else "forbidden",
            details=details,
        )
    text = f"{service}: {request}: {code} {message}" + (f" ({hint})" if hint else "")
    if code >= 500:
        kind = ServiceUnavailableError if code in {502, 503, 504} else TransientError
        return kind(text, retry_after=retry_after(response.headers), details=details)
    return _PERMANENT.get(code, PermanentError)(text, details=details)


def retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP-date) or a spent rate limit's reset; None if neither."""
    now = time.time() if now is None else now
    value = headers.get("retry-after", "").strip()
    if value:
        if _SECONDS.fullmatch(value):
            return float(value)
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            return None
    reset = headers.get("x-ratelimit-reset", "")
    if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(0.0, int(reset) - now)
    return None


def unprocessed(error: ForgeError) -> bool:
    """Whether the request behind ``error`` provably was not processed (safe to repeat even if not idempotent)."""
    if error.details.get("transport") in {e.__name__ for e in _NEVER_SENT}:
        return True
    return error.code == "rate_limited" or error.details.get("status") in _REFUSED


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    service: str,
    json: Any = None,
    hints: Mapping[int, str] | None = None,
) -> httpx.Response:
    """One request; a 2xx/3xx response, or its ``http_error`` raised."""
    try:
        response = await client.request(method, url, json=json)
    except httpx.TransportError as exc:
        raise http_error(exc, service=service, hints=hints) from exc
    if response.is_error:
        raise http_error(response, service=service, hints=hints)
    return response


async def retry(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, idempotent: bool = True) -> T:
    """``await call()``, retrying ``TransientError`` under ``policy`` (see the module docstring)."""

    def backoff(exc: Exception) -> bool | float:
        if not isinstance(exc, TransientError):
            return False
        if not idempotent and not unprocessed(exc):
            return False
        if exc.retry_after is None:
            return True  # stamina's exponential backoff
        return exc.retry_after if exc.retry_after <= policy.longest_retry_after else False

    caller = stamina.AsyncRetryingCaller(
        attempts=policy.attempts,
        timeout=policy.timeout,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
    ).on(backoff)
    return await caller(call)


def _transport_error(exc: httpx.TransportError, service: str) -> ServiceUnavailableError:
    try:
        request = exc.request
    except RuntimeError:  # raised outside a client request
        where, what = "", "unknown request"
    else:
        where = f" at {request.url.scheme}://{request.url.netloc.decode()}"
        what = f"{request.method} {request.url.path}"
    state = "is unreachable" if isinstance(exc, _NEVER_SENT) else "did not answer"
    return ServiceUnavailableError(
        f"{service}{where} {state}: {type(exc).__name__}: {exc}",
        details={"request": what, "transport": type(exc).__name__},
    )


def _message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(payload, dict) and payload.get("message"):
        return str(payload["message"])
    return response.text.strip()[:500] or response.reason_phrase

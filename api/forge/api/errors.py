"""The one place the error tree becomes HTTP (``application/problem+json``, RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, Field

from forge.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    ConflictError,
    ForgeError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "ProblemOut", "RateLimitedError", "problem", "problem_spec"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("forge.api")


class RateLimitedError(TransientError):
    """Too many requests of one identity or repository (``forge.api.auth.limits``): 429, retry after."""

    code = "rate_limited"


_STATUS: list[tuple[type[ForgeError], int]] = [
    (RateLimitedError, 429),
    (AuthenticationError, 401),
    (AuthorizationError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (LimitExceededError, 413),
    (ConfigError, 422),
    (InvalidInputError, 400),
    (PermanentError, 400),
    (ServiceUnavailableError, 503),
    (TransientError, 503),
]


class ProblemOut(BaseModel):
    """An error (RFC 9457); extension members (``errors``, ``repository``, ``field``, ...) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="about:blank")
    title: str = Field(description="A code: not_found, conflict, invalid_input, invalid_request, ...")
    status: int = Field(description="The HTTP status")
    detail: str = Field(description="What is wrong, for people")
    instance: str | None = Field(None, description="The request path")


def problem_spec(description: str) -> ResponseSpec:
    """The OpenAPI entry of an ``application/problem+json`` response."""
    return ResponseSpec(ProblemOut, description=description, media_type=PROBLEM_JSON, generate_examples=False)


_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})


def problem(status: int, title: str, detail: str, *, type_: str = "about:blank", **extra: Any) -> Response[Any]:
    """An RFC 9457 body; extension members never overwrite the standard ones."""
    body = {"type": type_, "title": title, "status": status, "detail": detail}
    for key, value in extra.items():
        body[f"forge_{key}" if key in _RESERVED - {"instance"} else key] = value
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON)


def _forge_error(request: Request[Any, Any, Any], exc: ForgeError) -> Response[Any]:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    response = problem(status, exc.code, exc.message, instance=request.url.path, **exc.details)
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(int(exc.retry_after))
    if isinstance(exc, AuthenticationError):
        response.headers["WWW-Authenticate"] = _challenge(exc)
    return response


def _challenge(exc: AuthenticationError) -> str:
    """RFC 6750 §3: no error code when the request carried no token, else ``invalid_token`` and why."""
    if exc.code == "missing_token":
        return 'Bearer realm="forge"'
    printable = "".join(c if " " <= c <= "~" else "?" for c in exc.message[:200])  # header-safe ASCII
    reason = printable.replace("\\", "\\\\").replace('"', '\\"')
    return f'Bearer realm="forge", error="invalid_token", error_description="{reason}"'


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = exc.extra if isinstance(exc.extra, list) else []
    return problem(400, "invalid_request", exc.detail, instance=request.url.path, errors=errors)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    response = problem(exc.status_code, "http_error", exc.detail, instance=request.url.path)
    response.headers.update(exc.headers or {})  # a 405 names the allowed methods (Allow, RFC 9110 §15.5.6)
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "internal server error", instance=request.url.path)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    ForgeError: _forge_error,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _unexpected,
}

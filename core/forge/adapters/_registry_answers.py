"""The registry port's error contract for an HTTP answer, shared by both registry adapters (the oras one
and the CMP's stdlib reader; standard library only, so the CMP's cold path stays small).

404 → NotFoundError; 401/403 → PermanentError ``registry_denied``; 429 and 5xx →
ServiceUnavailableError (with ``Retry-After``); other 4xx → PermanentError with the registry's own
error code, lowercased (``manifest_invalid``, ``digest_invalid``, ...). Messages carry the host and
what was asked, never a credential.
"""

from __future__ import annotations

import json
from typing import Any

from forge.errors import ForgeError, NotFoundError, PermanentError, ServiceUnavailableError

__all__ = ["denied", "failure", "retry_after"]


def failure(host: str, what: str, status: int, body: bytes, retry_after_header: str | None) -> ForgeError | None:
    """The error an answer of ``status`` means, or None for a 2xx."""
    if 200 <= status < 300:
        return None
    code, message = _registry_error(body)
    said = f": {code}: {message}" if code else ""
    details: dict[str, Any] = {"host": host, "status": status, "registry_code": code}
    if status == 404:
        return NotFoundError(f"{what} not found in registry {host}{said}", details=details)
    if status in (401, 403):
        return denied(host, what, status)
    if status == 429 or status >= 500:
        return ServiceUnavailableError(
            f"registry {host} answered HTTP {status} for {what}{said}",
            retry_after=retry_after(retry_after_header),
            details=details,
        )
    return PermanentError(
        f"registry {host} refused {what} (HTTP {status}){said}",
        code=code.lower() if code else "registry_rejected",
        details=details,
    )


def denied(host: str, what: str, status: int) -> PermanentError:
    return PermanentError(
        f"registry {host} denied access to {what} (HTTP {status}); check FORGE_REGISTRY__USERNAME/PASSWORD",
        code="registry_denied",
        details={"host": host, "status": status},
    )


def retry_after(value: str | None) -> float | None:
    """Whole seconds of a ``Retry-After`` header (an HTTP date is ignored)."""
    value = (value or "").strip()
    return float(value) if value.isdigit() else None


def _registry_error(body: bytes) -> tuple[str, str]:
    """The first ``{"errors": [{"code", "message"}]}`` entry of an OCI distribution error body."""
    try:
        first = json.loads(body).get("errors")[0]
        return str(first.get("code") or ""), str(first.get("message") or "")[:200]
    except (ValueError, AttributeError, IndexError, TypeError):
        return "", ""

"""Reads answered with the JSON the store already encoded (``forge.ports.store.JsonDocument``), with an
``ETag`` and ``If-None-Match`` → 304 (RFC 9110 §8.8.3, §13.1.2).

The body never passes through a response model: the store's bytes are the response (the compliance
suite proves them byte for byte equal to the models' encoding). The ``ETag`` is strong, made from the
document's version (a function of exactly the rows the body was built from) and a tag of this
encoding, so it changes whenever a byte of the body would.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec

from forge.ports.store import JsonDocument

__all__ = ["ETAG_HEADER", "NOT_MODIFIED", "TOTAL_HEADER", "document_response"]

#: Bump when the encoding of a document changes, so no client keeps an ETag of the old bytes.
_FORMAT = "1"
_JSON = "application/json"

ETAG_HEADER = ResponseHeader(
    name="ETag",
    description="Strong validator of the body; send it back in If-None-Match to get 304 while nothing changed",
    documentation_only=True,
)
TOTAL_HEADER = ResponseHeader(
    name="X-Total-Count", description="How many steps the run has in all (every page)", documentation_only=True
)
NOT_MODIFIED = {
    304: ResponseSpec(
        None, description="Not Modified: If-None-Match names the current ETag; no body", generate_examples=False
    )
}


def document_response(
    request: Request[Any, Any, Any], document: JsonDocument, kind: str, *, total: bool = False
) -> Response[Any]:
    """``document`` as a 200 with its ``ETag`` (and ``X-Total-Count`` when ``total``), or an empty 304
    when ``If-None-Match`` names that ETag (``*`` included)."""
    etag = f'"{kind}{_FORMAT}-{document.version}"'
    headers = {"ETag": etag}
    if total:
        headers["X-Total-Count"] = str(document.total)
    wanted = request.headers.get("if-none-match")
    if wanted is not None and _matches(wanted, etag):
        return Response(b"", status_code=304, headers=headers, media_type=_JSON)
    return Response(document.body, headers=headers, media_type=_JSON)


def _matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2), as If-None-Match asks."""
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))

"""Reads answered with the JSON the store already encoded (``forge.ports.store.JsonDocument``), with an
``ETag`` and ``If-None-Match`` → 304 (RFC 9110 §8.8.3, §13.1.2).

The body never passes through a response model: the store's bytes are the response (the compliance
suite proves them byte for byte equal to the models' encoding). The ``ETag`` is strong, made from the
document's version (a function of exactly the rows the body was built from) and a tag of this
encoding, so it changes whenever a byte of the body would.

The response is sent as built here (:class:`_DocumentResponse`): its status, header list and the
store's body bytes go to the ASGI ``send`` as they are, the same bytes and headers Litestar's
``Response`` → ``ASGIResponse`` made (a test compares them), without that conversion's work (~15 µs
of an executions read; docs/performance.md). The store holds each document's bytes by version, so
an unchanged document is encoded once, not per read.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from forge.ports.store import JsonDocument

__all__ = ["ETAG_HEADER", "NOT_MODIFIED", "TOTAL_HEADER", "document_response"]

#: Bump when the encoding of a document changes, so no client keeps an ETag of the old bytes.
_FORMAT = "1"
_JSON = "application/json"
_JSON_HEADER = (b"content-type", _JSON.encode())

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
    headers = [(b"etag", etag.encode("latin-1"))]
    if total:
        headers.append((b"x-total-count", str(document.total).encode()))
    wanted = _if_none_match(request.scope)
    if wanted is not None and _matches(wanted, etag):
        return _DocumentResponse(304, headers, b"")
    headers += (_JSON_HEADER, (b"content-length", str(len(document.body)).encode()))
    return _DocumentResponse(200, headers, document.body)


def _if_none_match(scope: Any) -> str | None:
    """The first ``If-None-Match`` header, as ``request.headers.get`` gives it (without building the multidict)."""
    for name, value in scope["headers"]:
        if name.lower() == b"if-none-match":
            return str(value.decode("latin-1"))
    return None


class _DocumentResponse(Response[bytes]):
    """A document's response as it goes out: Litestar asks it for its ASGI response and gets it as built.

    Only the fields of ``Response`` are set (no ``Response.__init__``: its normalising is what this
    skips); the routes using it declare no response headers, cookies or background tasks of their
    own to merge (``ETAG_HEADER`` and ``TOTAL_HEADER`` are documentation only).
    """

    __slots__ = ("_sent",)

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.content = body
        self.status_code = status
        self.media_type = _JSON
        self.headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.response_type_encoders = {}
        self._sent = _SentDocument(status, headers, body)

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> ASGIResponse:
        return self._sent


class _SentDocument(ASGIResponse):
    """The ASGI side of :class:`_DocumentResponse`: one ``http.response.start``, one body."""

    __slots__ = ("_raw_headers",)

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.body = body
        self._raw_headers = headers

    def encode_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self._raw_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": list(self._raw_headers)})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def _matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2), as If-None-Match asks."""
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))

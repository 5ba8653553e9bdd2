"""The run and executions reads send, message for message, what Litestar's ``Response`` of the same
status, headers and body sent before they built their responses themselves (``forge.api.schemas.documents``)."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app

from .support import api_services, auth_headers
from .test_executions_api import executing_run

Message = dict[str, Any]


async def _asgi_get(app: Litestar, path: str, query: str, headers: dict[str, str]) -> list[Message]:
    """The messages ``app`` sends for ``GET path?query`` (headers as uvicorn gives them: names lowercased)."""
    raw = [(b"host", b"forge.test"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def _litestar_sends(status: int, headers: dict[str, str], body: bytes) -> list[Message]:
    """What Litestar's own ``Response`` (as the handlers returned before) sends for the same answer."""
    request: Request[Any, Any, Any] = Request({"type": "http", "headers": [], "state": {}})  # type: ignore[arg-type]
    response = Response(body, status_code=status, headers=headers, media_type="application/json")
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await response.to_asgi_response(app=None, request=request)({}, receive, send)  # type: ignore[arg-type]
    return sent


async def test_reads_send_what_litestars_response_sent(
    store: PostgresStore, bus: NatsBus, objects: MinioObjectStore
) -> None:
    app = create_app(api_services(store, bus, objects))
    ex = await executing_run(store)
    reads = [
        (f"/v1/runs/{ex.run_id}", "", False),
        (f"/v1/runs/{ex.run_id}/executions", "", True),
        (f"/v1/runs/{ex.run_id}/executions", "limit=1&offset=1", True),
        ("/v1/runs", "limit=5", False),
    ]
    for path, query, total in reads:
        first = await _asgi_get(app, path, query, auth_headers())
        start, body = first
        headers = {name.decode(): value.decode() for name, value in start["headers"]}
        assert start["status"] == 200, (path, query)
        assert body["body"], (path, query)
        expected = {"ETag": headers["etag"]} | ({"X-Total-Count": headers["x-total-count"]} if total else {})
        assert first == await _litestar_sends(200, expected, body["body"]), (path, query)

        unchanged = await _asgi_get(app, path, query, auth_headers() | {"If-None-Match": headers["etag"]})
        assert unchanged == await _litestar_sends(304, expected, b""), (path, query)
        assert [m["type"] for m in unchanged] == ["http.response.start", "http.response.body"]

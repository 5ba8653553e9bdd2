"""A local HTTP server serving ``coordination.k8s.io/v1`` Lease objects the way the API server does.

GET, POST (create: 409 AlreadyExists when it exists) and PUT (replace: 409 Conflict unless the
body's ``metadata.resourceVersion`` is the stored one; every write bumps it) under
``/apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>]``, errors as ``Status`` objects.
MicroTime fields must carry exactly six fraction digits (what the API server's parser demands).
A test can seed or overwrite a Lease (another holder), and make the next requests fail.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from forge.embedded.process import free_port

_PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[a-z0-9-]+)/leases(?:/(?P<name>[a-z0-9.-]+))?$")
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_TIME_FIELDS = ("acquireTime", "renewTime")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class LeaseServer:
    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    url: str = ""
    _version: int = 0

    def __post_init__(self) -> None:
        server = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    code, answer = server.answer(
                        self.command, self.path.split("?")[0], json.loads(raw) if raw else None
                    )
                    server.requests.append((self.command, self.path, code))
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        if self.fail_next:
            code = self.fail_next.pop(0)
            return code, _status(code, "InternalError" if code >= 500 else "Forbidden", "injected failure")
        match = _PATH.match(path)
        if match is None:
            return 404, _status(404, "NotFound", f"no route {path}")
        ns, name = match["ns"], match["name"]
        if method == "GET" and name:
            lease = self.leases.get((ns, name))
            if lease is None:
                return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            return 200, lease
        if method == "POST" and not name:
            problem = self._invalid(body)
            if problem:
                return 400, _status(400, "BadRequest", problem)
            name = body["metadata"]["name"]
            if (ns, name) in self.leases:
                return 409, _status(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
            return 201, self._store(ns, name, body)
        if method == "PUT" and name:
            problem = self._invalid(body)
            if problem:
                return 400, _status(400, "BadRequest", problem)
            current = self.leases.get((ns, name))
            if current is None:
                return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                message = (
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again"
                )
                return 409, _status(409, "Conflict", message)
            return 200, self._store(ns, name, body)
        return 405, _status(405, "MethodNotAllowed", f"{method} {path}")

    @staticmethod
    def _invalid(body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("kind") != "Lease" or "name" not in body.get("metadata", {}):
            return "body is not a Lease with a name"
        for key in _TIME_FIELDS:
            value = body.get("spec", {}).get(key)
            if value is not None and not _MICRO_TIME.match(value):
                return f"spec.{key}: {value!r} is not an RFC 3339 time with microseconds"
        return None

    def _store(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(self._version), "uid": f"uid-{name}"},
            "spec": dict(body.get("spec") or {}),
        }
        self.leases[(ns, name)] = lease
        return lease

    def put(self, ns: str, name: str, holder: str | None, *, duration: int = 15, transitions: int = 0) -> None:
        """Write a Lease as another process would (a holder the elector does not control)."""
        stamp = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self._version)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"leaseDurationSeconds": duration, "renewTime": stamp, "leaseTransitions": transitions}
        if holder:
            spec |= {"holderIdentity": holder, "acquireTime": stamp}
        with self._lock:
            self._store(ns, name, {"metadata": {"name": name}, "spec": spec})

    def spec(self, ns: str, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.leases[(ns, name)]["spec"])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def _lease_server() -> Iterator[LeaseServer]:
    server = LeaseServer()
    yield server
    server.close()


@pytest.fixture
def lease_server(_lease_server: LeaseServer) -> LeaseServer:
    with _lease_server._lock:
        _lease_server.leases.clear()
        _lease_server.fail_next.clear()
        _lease_server.requests.clear()
    return _lease_server

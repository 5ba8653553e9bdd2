"""A local stand-in for GitHub's commit status API (GitHub cannot run here), for tests.

It answers ``POST /repos/{owner}/{repo}/statuses/{sha}`` the way GitHub does (201 with the
status object; 401/404/422 bodies ``{"message", "documentation_url"}``), records every request,
and can be told to fail the next requests with given status codes.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from forge.embedded.process import free_port

__all__ = ["FakeGithub", "GithubRequest"]

_STATUSES = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]{40})$")
_DOCS = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"


@dataclass(frozen=True, slots=True)
class GithubRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    answered: int


@dataclass
class FakeGithub:
    token: str = "ghp_test"  # noqa: S105 - the fake's own throwaway credential
    requests: list[GithubRequest] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # status codes to answer with, in order
    url: str = ""

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                code, answer = fake.answer(self.path, self.headers.get("Authorization"), body)
                fake.requests.append(GithubRequest("POST", self.path, dict(self.headers.items()), body, code))
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, path: str, auth: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if self.fail_next:
            code = self.fail_next.pop(0)
            return code, {"message": "Server Error" if code >= 500 else "Failure", "documentation_url": _DOCS}
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        match = _STATUSES.match(path)
        if match is None:
            return 404, {"message": "Not Found", "documentation_url": _DOCS}
        if not isinstance(body, dict) or body.get("state") not in {"pending", "success", "failure", "error"}:
            return 422, {"message": "Validation Failed", "errors": [{"field": "state", "code": "invalid"}]}
        return 201, {
            "url": f"https://api.github.com{path}",
            "id": len(self.requests) + 1,
            "node_id": "SC_kwDOAAAB",
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context", "default"),
            "created_at": "2026-11-27T12:00:00Z",
            "updated_at": "2026-11-27T12:00:00Z",
            "creator": {"login": "forge-bot", "id": 1, "type": "Bot"},
        }

    def statuses(self) -> list[tuple[str, str, str]]:
        """(sha, state, description) of every accepted status, in order."""
        return [
            (r.path.rsplit("/", 1)[1], r.body["state"], r.body.get("description", ""))
            for r in self.requests
            if r.answered == 201
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

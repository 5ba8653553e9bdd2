"""A fake Kubernetes API server: real HTTP, the API server's real object and ``Status`` shapes.

It serves what the adapters read, under the paths the API server uses:

- ``GET /apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/{name}``: an Argo CD ``Application``
  (:func:`application` builds one the way Argo CD writes its status);
- ``GET /api/v1/namespaces/{ns}/secrets/{name}``: a ``Secret`` (``data`` base64, as the API answers).

A request without ``Authorization: Bearer <token>`` is 401, a ``forbidden`` one 403 with the RBAC
message, an unknown object 404 — each a ``Status`` body (``kind: Status``, ``reason``, ``message``,
``code``). ``outage.fail_next(n)`` answers the next requests 503; ``down = True`` drops every
connection without an answer (the API server gone). Every request is recorded.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..engine.support import Outage

__all__ = ["TOKEN", "FakeKube", "application", "secret"]

TOKEN = "k8s-test-token"
_APP_PATH = ("apis", "argoproj.io", "v1alpha1", "namespaces")
_SECRET_PATH = ("api", "v1", "namespaces")


def application(
    name: str,
    *,
    namespace: str = "argocd",
    sync: str | None = "Synced",
    revision: str | None = None,
    health: str | None = "Healthy",
    health_message: str | None = None,
    phase: str | None = "Succeeded",
    operation_message: str | None = "successfully synced (all tasks run)",
    operation_revision: str | None = None,
) -> dict[str, Any]:
    """An Application as Argo CD stores it (a ``None`` leaves that part of the status out)."""
    source = {
        "repoURL": "https://git.example/gitops.git",
        "path": f"dev/apps/acme/shop/{name}",
        "targetRevision": "main",
        "plugin": {"name": "forge-release-v1"},
    }
    status: dict[str, Any] = {"sourceType": "Plugin", "reconciledAt": "2025-05-01T12:00:00Z"}
    if sync is not None:
        status["sync"] = {
            "status": sync,
            "comparedTo": {"source": source, "destination": {"server": "https://kubernetes.default.svc"}},
        }
        if revision is not None:
            status["sync"]["revision"] = revision
    if health is not None:
        status["health"] = {"status": health, "lastTransitionTime": "2025-05-01T12:00:00Z"}
        if health_message is not None:
            status["health"]["message"] = health_message
    if phase is not None:
        status["operationState"] = {
            "operation": {"sync": {"revision": operation_revision or revision}, "initiatedBy": {"automated": True}},
            "phase": phase,
            "message": operation_message,
            "startedAt": "2025-05-01T11:59:58Z",
            "syncResult": {
                "revision": operation_revision or revision,
                "source": source,
                "resources": [
                    {
                        "group": "apps",
                        "version": "v1",
                        "kind": "Deployment",
                        "namespace": name,
                        "name": "web",
                        "status": "Synced",
                        "message": "deployment.apps/web configured",
                        "hookPhase": "Running",
                        "syncPhase": "Sync",
                    },
                ],
            },
        }
        if phase in ("Succeeded", "Failed", "Error"):
            status["operationState"]["finishedAt"] = "2025-05-01T11:59:59Z"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "3f1d8b5e-1111-4a4a-9c9c-000000000001",
            "resourceVersion": "12345",
            "generation": 7,
            "creationTimestamp": "2025-05-01T11:00:00Z",
            "annotations": {"argocd.argoproj.io/manifest-generate-paths": ".;/dev/env.yaml"},
        },
        "spec": {
            "project": "default",
            "source": source,
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["CreateNamespace=true"]},
        },
        "status": status,
    }


def secret(name: str, values: dict[str, str], *, namespace: str = "forge") -> dict[str, Any]:
    """A Secret as the API server answers it: every value base64 under ``data``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "uid": "9a0c-0002", "resourceVersion": "99"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


@dataclass
class FakeKube:
    token: str = TOKEN
    applications: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: bool = False
    down: bool = False
    outage: Outage = field(default_factory=Outage)
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put_application(self, app: dict[str, Any]) -> None:
        self.applications[(app["metadata"]["namespace"], app["metadata"]["name"])] = app

    def put_secret(self, obj: dict[str, Any]) -> None:
        self.secrets[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if fake.down:
                    self.close_connection = True
                    return
                failure = fake.outage.take()
                if failure is not None:
                    message = "the server is currently unable to handle the request"
                    self._status(failure.status, "ServiceUnavailable", message, failure.headers)
                    return
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._status(401, "Unauthorized", "Unauthorized")
                    return
                self._route(self.path.partition("?")[0].strip("/").split("/"))

            def _route(self, parts: list[str]) -> None:
                if len(parts) == 7 and tuple(parts[:4]) == _APP_PATH and parts[5] == "applications":
                    self._object(fake.applications, parts[4], parts[6], "applications", "argoproj.io")
                elif len(parts) == 6 and tuple(parts[:3]) == _SECRET_PATH and parts[4] == "secrets":
                    self._object(fake.secrets, parts[3], parts[5], "secrets", "")
                else:
                    self._status(404, "NotFound", "the server could not find the requested resource")

            def _object(self, store: dict[tuple[str, str], Any], ns: str, name: str, plural: str, group: str) -> None:
                resource = f"{plural}.{group}" if group else plural
                if fake.forbidden:
                    self._status(
                        403,
                        "Forbidden",
                        f'{resource} "{name}" is forbidden: User "system:serviceaccount:forge:forge-controller" '
                        f'cannot get resource "{plural}" in API group "{group}" in the namespace "{ns}"',
                    )
                    return
                found = store.get((ns, name))
                if found is None:
                    self._status(404, "NotFound", f'{resource} "{name}" not found')
                    return
                self._send(200, found)

            def _status(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": reason,
                    "code": code,
                }
                self._send(code, body, headers)

            def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

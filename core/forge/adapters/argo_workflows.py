"""``ArgoWorkflowEngine``: the WorkflowEngine over the Argo Server REST API (grpc-gateway JSON).

Endpoints (namespace ``ns``):

- ``POST /api/v1/workflow-templates/{ns}`` ``{"namespace", "template"}``; on 409 AlreadyExists
  ``GET /api/v1/workflow-templates/{ns}/{name}`` and compare ``spec``: equal is success (a
  template is never updated in place), different is ``ConflictError``;
- ``POST /api/v1/workflows/{ns}/submit`` ``{"resourceKind": "WorkflowTemplate", "resourceName",
  "submitOptions": {"parameters": ["k=v"], "labels": "k=v,k2=v2"}}``;
- ``GET /api/v1/workflows/{ns}/{name}``, mapped to ``WorkflowStatus`` (below);
- ``PUT /api/v1/workflows/{ns}/{name}/terminate``: Argo's ``terminate`` kills running pods and
  starts nothing new, without exit handlers (our templates have none). It carries no message:
  Argo records "Stopped with strategy 'Terminate'"; ours is logged.

``watch`` polls ``GET`` every ``poll_interval`` seconds and yields on change: simpler and more
robust behind proxies than the ``/api/v1/workflow-events`` stream, and the controller only needs
phase transitions at that granularity.

Nodes: Argo's ``status.nodes`` maps node ids to nodes of the whole tree. A DAG task is a node
of type ``DAG`` (a nested DAG such as the builder's ``group-<n>``), ``Retry``, ``Pod`` or
``Skipped`` inside the boundary of the entrypoint DAG or of any nested DAG, that is not an
attempt (child) of a ``Retry`` node; it is reported under its ``displayName`` with ``attempts``
= the number of ``Pod`` children of its ``Retry`` node (1 for a plain ``Pod``, 0 for
``Skipped``/``Omitted``). Outputs: ``outputs.result``, ``outputs.exitCode`` and every output
parameter by name.

Errors and retries: ``forge.adapters._http`` (shared with the GitHub adapter) maps responses and
transport failures onto the error tree, each carrying Argo's ``message`` (401/403 →
``PermanentError``, 404 → ``NotFoundError``, 409 → ``ConflictError``, 400/422 →
``InvalidInputError``, 429/5xx → ``TransientError``/``ServiceUnavailableError`` with
``retry_after``, transport failures → ``ServiceUnavailableError``), and retries every call on
``TransientError`` with stamina under ``retry`` (a ``RetryPolicy``), honouring ``Retry-After``.
Reads, ``terminate`` and template creation (a repeat ends in the 409 comparison above) are
idempotent; ``submit`` is not (a repeat could start a second workflow), so it is retried only when
the request provably was not processed (connect errors, 429, 503). Each attempt goes through the
``argo`` circuit breaker (``forge.adapters._breakers``): an Argo Server that keeps failing is not
asked again until its probe, and every call fails fast with a ``TransientError`` meanwhile.

Why httpx and not a maintained client (hera 7.1, measured against ``httpx.MockTransport`` and read):
hera's sync ``WorkflowsService`` is built on ``requests`` (a thread per call in our async
controller); its ``AsyncWorkflowsService`` is on httpx but (1) turns every error response into a
``HeraException`` holding only a message string: the response and its headers are gone, so
``Retry-After`` cannot be read and 429, 502, 503 and 504 are one bare ``HeraException`` (without
even its ``status_code`` attribute), and a JSON error body without ``message`` escapes as
``KeyError``; (2) serializes every POST/PUT body with pydantic's deprecated ``.json()``, a
``PydanticDeprecatedSince20`` warning on each ``terminate``/``submit`` (an error under our
``filterwarnings = error``); (3) parses answers into hera models that drop fields they do not
know (a newer Argo's node fields vanish) and require ``spec``; (4) builds URLs with ``urljoin``,
which drops a path prefix of the server URL (Argo behind ``--basehref``). The ``argo-workflows``
package is a synchronous OpenAPI client on urllib3 and is not installed. The REST calls here are
four endpoints, so httpx it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from forge.adapters._breakers import CircuitBreaker
from forge.adapters._http import RetryPolicy, retry, send
from forge.errors import ConflictError, InvalidInputError
from forge.ports.engine import NodePhase, NodeStatus, WorkflowPhase, WorkflowStatus

if TYPE_CHECKING:
    from forge.settings import EngineSettings

__all__ = ["ArgoWorkflowEngine"]

_log = logging.getLogger(__name__)
_TASK_TYPES = {"Retry", "Pod", "Skipped", "DAG"}
_SERVICE = "Argo Server"
_HINTS = {
    401: "check the bearer token",
    403: "check the bearer token and its RBAC for this namespace",
}


class ArgoWorkflowEngine:
    """WorkflowEngine on an Argo Server; use ``async with`` or call ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        *,
        namespace: str,
        token: str | None = None,
        verify: bool = True,
        timeout: float = 30.0,
        poll_interval: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ):
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        self._ns = namespace
        self._poll_interval = poll_interval
        self._retry = retry or RetryPolicy()
        self._breaker = breaker or CircuitBreaker("argo")
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, verify=verify, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Self:
        """From ``FORGE_ENGINE__*`` (kind=argo), with the ``argo`` breaker's thresholds."""
        token = settings.argo_token.get_secret_value() if settings.argo_token else None
        return cls(
            settings.argo_url,
            namespace=settings.namespace,
            token=token,
            verify=settings.verify_tls,
            breaker=CircuitBreaker.from_settings("argo", settings.breaker),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_template(self, template: Mapping[str, Any]) -> str:
        name = str((template.get("metadata") or {}).get("name") or "")
        if not name:
            raise InvalidInputError("WorkflowTemplate: metadata.name is required")
        path = f"/api/v1/workflow-templates/{self._ns}"
        try:
            created = await self._request("POST", path, {"namespace": self._ns, "template": template})
        except ConflictError:
            existing = await self._request("GET", f"{path}/{name}")
            if _normal(existing.get("spec")) != _normal(template.get("spec")):
                raise ConflictError(
                    f"WorkflowTemplate '{name}' already exists in namespace '{self._ns}' with a different spec",
                    details={"template": name},
                ) from None
            return name
        return str(created.get("metadata", {}).get("name") or name)

    async def submit(self, template_name: str, *, parameters: Mapping[str, str], labels: Mapping[str, str]) -> str:
        options: dict[str, Any] = {"parameters": [f"{k}={v}" for k, v in parameters.items()]}
        if labels:
            options["labels"] = ",".join(f"{k}={v}" for k, v in labels.items())
        body = {
            "namespace": self._ns,
            "resourceKind": "WorkflowTemplate",
            "resourceName": template_name,
            "submitOptions": options,
        }
        workflow = await self._request("POST", f"/api/v1/workflows/{self._ns}/submit", body, idempotent=False)
        return str(workflow["metadata"]["name"])

    async def status(self, workflow_name: str) -> WorkflowStatus:
        workflow = await self._request("GET", f"/api/v1/workflows/{self._ns}/{workflow_name}")
        return workflow_status(workflow)

    async def watch(self, workflow_name: str) -> AsyncIterator[WorkflowStatus]:
        last: WorkflowStatus | None = None
        while True:
            status = await self.status(workflow_name)
            if status != last:
                yield status
                last = status
            if status.phase.is_final:
                return
            await asyncio.sleep(self._poll_interval)

    async def stop(self, workflow_name: str, *, message: str) -> None:
        _log.info("terminating Argo workflow %s/%s: %s", self._ns, workflow_name, message)
        body = {"namespace": self._ns, "name": workflow_name}
        await self._request("PUT", f"/api/v1/workflows/{self._ns}/{workflow_name}/terminate", body)

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        async def call() -> httpx.Response:
            async with self._breaker:
                return await send(self._client, method, path, service=_SERVICE, json=body, hints=_HINTS)

        response = await retry(call, self._retry, idempotent=idempotent)
        data = response.json()
        return data if isinstance(data, dict) else {}


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def workflow_status(workflow: Mapping[str, Any]) -> WorkflowStatus:
    """Map an Argo ``Workflow`` (JSON) onto ``WorkflowStatus``."""
    name = str(workflow["metadata"]["name"])
    status = workflow.get("status") or {}
    nodes: Mapping[str, Mapping[str, Any]] = status.get("nodes") or {}
    attempts_of_retries = {c for n in nodes.values() if n.get("type") == "Retry" for c in n.get("children") or []}
    root = nodes.get(name)
    boundary = root.get("id", name) if root else name
    boundaries = {boundary} | {str(n.get("id", i)) for i, n in nodes.items() if n.get("type") == "DAG"}
    tasks: dict[str, NodeStatus] = {}
    for node_id, node in nodes.items():
        if node.get("type") not in _TASK_TYPES or node_id in attempts_of_retries or node_id == boundary:
            continue
        if node.get("boundaryID", boundary) not in boundaries:
            continue
        display = str(node.get("displayName") or node.get("name") or node_id)
        tasks[display] = _node_status(display, node, nodes)
    return WorkflowStatus(
        name=name,
        phase=WorkflowPhase(status.get("phase") or "Pending"),
        message=status.get("message") or None,
        started_at=_time(status.get("startedAt")),
        finished_at=_time(status.get("finishedAt")),
        nodes=tasks,
    )


def _node_status(display: str, node: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> NodeStatus:
    kind = node.get("type")
    outputs_node = node
    if kind == "Retry":
        pods = [nodes[c] for c in node.get("children") or [] if nodes.get(c, {}).get("type") == "Pod"]
        attempts = len(pods)
        if not node.get("outputs") and pods:
            outputs_node = pods[-1]
    else:
        attempts = 1 if kind == "Pod" else 0
    raw = outputs_node.get("outputs") or {}
    outputs = {p["name"]: str(p.get("value", "")) for p in raw.get("parameters") or [] if "name" in p}
    if "result" in raw:
        outputs["result"] = str(raw["result"])
    if "exitCode" in raw:
        outputs["exitCode"] = str(raw["exitCode"])
    return NodeStatus(
        name=display,
        phase=NodePhase(node.get("phase") or "Pending"),
        message=node.get("message") or None,
        started_at=_time(node.get("startedAt")),
        finished_at=_time(node.get("finishedAt")),
        attempts=attempts,
        outputs=outputs,
    )

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

Errors: transport failures → ``ServiceUnavailableError``; 5xx and 429 → ``TransientError``;
401/403 → ``PermanentError``; 404 → ``NotFoundError``; 409 → ``ConflictError``; 400/422 →
``InvalidInputError``; each carries Argo's ``message``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)
from forge.ports.engine import NodePhase, NodeStatus, WorkflowPhase, WorkflowStatus

__all__ = ["ArgoWorkflowEngine"]

_log = logging.getLogger(__name__)
_TASK_TYPES = {"Retry", "Pod", "Skipped", "DAG"}


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
    ):
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        self._ns = namespace
        self._poll_interval = poll_interval
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, verify=verify, timeout=timeout, transport=transport
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
        workflow = await self._request("POST", f"/api/v1/workflows/{self._ns}/submit", body)
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

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"Argo Server at {self._client.base_url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.is_success:
            data = response.json()
            return data if isinstance(data, dict) else {}
        raise _error(response, f"{method} {path}")


def _error(response: httpx.Response, what: str) -> ForgeError:
    code = response.status_code
    try:
        payload = response.json()
        message = str(payload.get("message") or payload) if isinstance(payload, dict) else str(payload)
    except ValueError:
        message = response.text.strip() or response.reason_phrase
    details = {"status": code, "request": what}
    text = f"Argo Server: {what}: {message}"
    if code in {401, 403}:
        return PermanentError(
            f"Argo Server refused the request ({code}): {message}; check the bearer token and its RBAC "
            f"for this namespace",
            code="unauthorized" if code == 401 else "forbidden",
            details=details,
        )
    if code == 404:
        return NotFoundError(message, details=details)
    if code == 409:
        return ConflictError(message, details=details)
    if code in {400, 422}:
        return InvalidInputError(text, details=details)
    if code == 429 or code >= 500:
        retry_after = response.headers.get("Retry-After")
        return TransientError(
            text, retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None, details=details
        )
    return PermanentError(text, details=details)


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

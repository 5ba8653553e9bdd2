"""A generic fake Argo Server: real HTTP, Argo's real JSON shapes (hera models), scripted outcomes.

It keeps the WorkflowTemplates it is given and runs any of them the way the template builder lays
them out (``main`` → one ``group-<n>`` DAG task per phase group → one container task per step):

- ``POST /api/v1/workflow-templates/{ns}`` stores the template (409 AlreadyExists on a repeat);
- ``POST /api/v1/workflows/{ns}/submit`` makes a workflow ``<template>-<5 chars>`` from a stored
  template (no status yet, as Argo answers);
- each ``GET /api/v1/workflows/{ns}/{name}`` advances it: ``running_polls`` answers ``Running``
  (root DAG node, one ``DAG`` node per group with ``boundaryID`` = the root, the first group
  running, its leaves as running ``Pod`` nodes with ``boundaryID`` = their group and
  ``displayName`` = the task name; later groups pending), then the final phase the test chose in
  ``outcome``: every node ``Succeeded``, or the leaf ``outcome.fail`` ``Failed`` with
  "Error (exit code 3)", its group failed, later groups ``Omitted``, the workflow ``Failed`` with
  "child 'group-<n>' failed". ``outcome.hold`` keeps it ``Running`` until terminated;
- ``PUT /api/v1/workflows/{ns}/{name}/terminate`` stops it: every unfinished node and the
  workflow become ``Failed`` with "Stopped with strategy 'Terminate'".

Errors are grpc-gateway bodies ``{"code", "message", "details"}``. Every request is recorded.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hera.workflows import models as m

from forge.embedded.process import free_port

from ..engine.support import Outage

__all__ = ["TERMINATED", "FakeArgo", "Outcome", "Request"]

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
TERMINATED = "Stopped with strategy 'Terminate'"
EXIT_3 = "Error (exit code 3)"
_GRPC = {"InvalidArgument": 3, "NotFound": 5, "AlreadyExists": 6}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a submitted workflow ends: ``fail`` names the leaf task that fails (None: all succeed)."""

    fail: str | None = None
    hold: bool = False  # stay Running until terminated
    running_polls: int = 1  # GETs answered Running before the final phase


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: Any


@dataclass
class _Workflow:
    name: str
    template: str
    labels: dict[str, str]
    gets: int = 0
    terminated: bool = False


@dataclass
class FakeArgo:
    namespace: str
    outcome: Outcome = field(default_factory=Outcome)
    received: dict[str, dict[str, Any]] = field(default_factory=dict)  # templates as posted
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # as Argo stores them
    workflows: dict[str, _Workflow] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    outage: Outage = field(default_factory=Outage)  # fail_next(n): answer 503 for a while

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # -- what the tests read ------------------------------------------------------------------------

    def seen(self, method: str, suffix: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def gets_of(self, workflow: str) -> int:
        with self.lock:
            return self.workflows[workflow].gets if workflow in self.workflows else 0

    # -- the API --------------------------------------------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # api v1 <kind> <ns> [name] [action]
        if parts[:2] != ["api", "v1"] or len(parts) < 4:
            return _error(404, "NotFound", f"no route for {method} {path}")
        kind, ns, rest = parts[2], parts[3], parts[4:]
        if ns != self.namespace:
            return _error(404, "NotFound", f'namespaces "{ns}" not found')
        if kind == "workflow-templates" and method == "POST" and not rest:
            return self._create_template(body)
        if kind == "workflow-templates" and method == "GET" and len(rest) == 1:
            if rest[0] not in self.templates:
                return _error(404, "NotFound", f'workflowtemplates.argoproj.io "{rest[0]}" not found')
            return 200, self.templates[rest[0]]
        if kind == "workflows" and method == "POST" and rest == ["submit"]:
            return self._submit(body)
        if kind == "workflows" and rest and rest[0] in self.workflows:
            wf = self.workflows[rest[0]]
            if method == "GET" and len(rest) == 1:
                wf.gets += 1
                return 200, self._render(wf)
            if method == "PUT" and rest[1:] == ["terminate"]:
                wf.terminated = True
                return 200, self._render(wf)
        return _error(404, "NotFound", f'workflows.argoproj.io "{rest[0] if rest else ""}" not found')

    def _create_template(self, body: Any) -> tuple[int, Any]:
        template = body["template"]
        name = template["metadata"]["name"]
        if name in self.templates:
            return _error(409, "AlreadyExists", f'workflowtemplates.argoproj.io "{name}" already exists')
        stored = m.WorkflowTemplate.model_validate(template)
        stored.metadata.namespace = self.namespace
        stored.metadata.uid = "0b0b0b0b-0000-4000-8000-000000000000"
        stored.metadata.creation_timestamp = m.Time(T0)
        self.received[name] = template
        self.templates[name] = _dump(stored)
        return 200, self.templates[name]

    def _submit(self, body: Any) -> tuple[int, Any]:
        if body.get("resourceKind") != "WorkflowTemplate":
            return _error(400, "InvalidArgument", f"resourceKind '{body.get('resourceKind')}' is not supported")
        template = body.get("resourceName", "")
        if template not in self.templates:
            return _error(404, "NotFound", f'workflowtemplates.argoproj.io "{template}" not found')
        raw = (body.get("submitOptions") or {}).get("labels", "")
        labels = dict(kv.split("=", 1) for kv in raw.split(",") if kv)
        name = f"{template}-{''.join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))}"
        self.workflows[name] = wf = _Workflow(name=name, template=template, labels=labels)
        return 200, self._render(wf)

    # -- workflows as Argo reports them --------------------------------------------------------------

    def groups(self, template: str) -> list[tuple[str, list[str]]]:
        """``[(group task, [leaf task, ...]), ...]`` of the template's entrypoint DAG."""
        spec = self.templates[template]["spec"]
        by_name = {t["name"]: t for t in spec["templates"]}
        main = by_name[spec["entrypoint"]]["dag"]["tasks"]
        return [(g["name"], [t["name"] for t in by_name[g["template"]]["dag"]["tasks"]]) for g in main]

    def _render(self, wf: _Workflow) -> dict[str, Any]:
        source = self.templates[wf.template]
        workflow_labels = ((source["spec"].get("workflowMetadata") or {}).get("labels")) or {}
        labels = {**workflow_labels, **wf.labels, "workflows.argoproj.io/workflow-template": wf.template}
        meta = m.ObjectMeta(name=wf.name, namespace=self.namespace, labels=labels, creation_timestamp=m.Time(T0))
        spec = m.WorkflowSpec(workflow_template_ref=m.WorkflowTemplateRef(name=wf.template))
        if wf.gets == 0 and not wf.terminated:
            return _dump(m.Workflow(metadata=meta, spec=spec))
        running = not wf.terminated and (self.outcome.hold or wf.gets <= self.outcome.running_polls)
        if running:
            status = self._running(wf)
        elif wf.terminated:
            status = self._terminated(wf)
        else:
            status = self._finished(wf)
        if status.phase != "Running":
            labels["workflows.argoproj.io/completed"] = "true"
        labels["workflows.argoproj.io/phase"] = str(status.phase)
        return _dump(m.Workflow(metadata=meta, spec=spec, status=status))

    def _tree(self, wf: _Workflow, phases: dict[str, tuple[str, str | None]]) -> dict[str, m.NodeStatus]:
        """Nodes of every group and leaf named in ``phases`` (task -> (phase, message))."""
        nodes: dict[str, m.NodeStatus] = {}
        for index, (group, leaves) in enumerate(self.groups(wf.template)):
            if group not in phases:
                continue
            group_id = _id(wf.name, group)
            group_phase, group_message = phases[group]
            if group_phase == "Omitted":
                nodes[group_id] = _node(wf.name, group, group, "Skipped", group_phase, wf.name, group_message, index)
                continue
            children = [_id(wf.name, f"{group}.{leaf}") for leaf in leaves if leaf in phases]
            nodes[group_id] = _node(
                wf.name, group, group, "DAG", group_phase, wf.name, group_message, index, children=children
            )
            for leaf in leaves:
                if leaf in phases:
                    phase, message = phases[leaf]
                    path = f"{group}.{leaf}"
                    nodes[_id(wf.name, path)] = _node(wf.name, path, leaf, "Pod", phase, group_id, message, index)
        return nodes

    def _status(self, wf: _Workflow, phase: str, message: str | None, phases: dict[str, tuple[str, str | None]]) -> Any:
        done = phase != "Running"
        root = m.NodeStatus(
            id=wf.name,
            name=wf.name,
            display_name=wf.name,
            type="DAG",
            template_name="main",
            phase=phase,
            message=message,
            children=[_id(wf.name, self.groups(wf.template)[0][0])],
            started_at=m.Time(T0),
            finished_at=m.Time(T0 + timedelta(minutes=5)) if done else None,
        )
        return m.WorkflowStatus(
            phase=phase,
            message=message,
            started_at=m.Time(T0),
            finished_at=m.Time(T0 + timedelta(minutes=5)) if done else None,
            nodes={wf.name: root, **self._tree(wf, phases)},
        )

    def _running(self, wf: _Workflow) -> Any:
        phases: dict[str, tuple[str, str | None]] = {}
        for index, (group, leaves) in enumerate(self.groups(wf.template)):
            phases[group] = ("Running" if index == 0 else "Pending", None)
            if index == 0:
                phases.update(dict.fromkeys(leaves, ("Running", None)))
        return self._status(wf, "Running", None, phases)

    def _terminated(self, wf: _Workflow) -> Any:
        phases: dict[str, tuple[str, str | None]] = {}
        for index, (group, leaves) in enumerate(self.groups(wf.template)):
            phases[group] = ("Failed", TERMINATED)
            if index == 0:
                phases.update(dict.fromkeys(leaves, ("Failed", TERMINATED)))
        return self._status(wf, "Failed", TERMINATED, phases)

    def _finished(self, wf: _Workflow) -> Any:
        phases: dict[str, tuple[str, str | None]] = {}
        failed_group: str | None = None
        for group, leaves in self.groups(wf.template):
            if failed_group is not None:
                phases[group] = ("Omitted", "omitted: depends condition not met")
                continue
            for leaf in leaves:
                phases[leaf] = ("Failed", EXIT_3) if leaf == self.outcome.fail else ("Succeeded", None)
            if self.outcome.fail in leaves:
                failed_group = group
                phases[group] = ("Failed", f"child '{self.outcome.fail}' failed")
            else:
                phases[group] = ("Succeeded", None)
        if failed_group is None:
            return self._status(wf, "Succeeded", None, phases)
        return self._status(wf, "Failed", f"child '{failed_group}' failed", phases)


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def _error(code: int, grpc: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"code": _GRPC[grpc], "message": message, "details": []}


def _id(workflow: str, path: str) -> str:
    return f"{workflow}-{zlib.crc32(path.encode())}"


def _node(
    workflow: str,
    path: str,
    display: str,
    type_: str,
    phase: str,
    boundary: str,
    message: str | None,
    index: int,
    children: list[str] | None = None,
) -> m.NodeStatus:
    started = phase not in {"Pending", "Omitted"}
    finished = phase in {"Succeeded", "Failed", "Omitted"}
    outputs = m.Outputs(exit_code="3") if message == EXIT_3 else None
    return m.NodeStatus(
        id=_id(workflow, path),
        name=f"{workflow}.{path}",
        display_name=display,
        type=type_,
        phase=phase,
        boundary_id=boundary,
        message=message,
        children=children or None,
        outputs=outputs,
        started_at=m.Time(T0 + timedelta(seconds=10 * index)) if started else None,
        finished_at=m.Time(T0 + timedelta(seconds=10 * index + 5)) if finished else None,
    )


def _handler(fake: FakeArgo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base class's name
            pass

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            failure = fake.outage.take()
            headers: dict[str, str] = {}
            with fake.lock:
                fake.requests.append(Request(method, self.path, body))
                if failure is None:
                    code, answer = fake.route(method, self.path, body)
                else:
                    code, answer, headers = failure.status, failure.body, dict(failure.headers)
            data = json.dumps(answer).encode()
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

    return Handler

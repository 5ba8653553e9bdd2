"""ArgoWorkflowEngine against a real HTTP server speaking the Argo Server REST API.

The fake serves Argo's real shapes, built from hera's generated Argo models
(``model_dump(by_alias=True, exclude_none=True)``), grpc-gateway error bodies included, and
advances a submitted workflow one step on every GET. ``argo.outage.fail_next(n, ...)`` (support.py)
makes it answer the next n requests with 503 and ``Retry-After``.

stamina runs in test mode here: every attempt is kept, every wait is zero.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stamina
from hera.workflows import models as m

from forge.adapters._http import RetryPolicy
from forge.adapters.argo_workflows import ArgoWorkflowEngine
from forge.embedded.process import free_port
from forge.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)
from forge.ports.engine import NodePhase, WorkflowPhase

from .support import Outage

NS = "ci"
TOKEN = "s3cr3t"
T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
GRPC = {
    "InvalidArgument": 3,
    "NotFound": 5,
    "AlreadyExists": 6,
    "PermissionDenied": 7,
    "Internal": 13,
    "Unauthenticated": 16,
}


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def _t(seconds: int) -> m.Time:
    return m.Time(T0 + timedelta(seconds=seconds))


def _node(wf: str, suffix: str, display: str, type_: str, phase: str, **kw: Any) -> m.NodeStatus:
    return m.NodeStatus(
        id=f"{wf}-{suffix}", name=f"{wf}.{display}", display_name=display, type=type_, phase=phase, boundary_id=wf, **kw
    )


def _workflow(name: str, template: str, labels: dict[str, str], step: int, terminated: bool) -> dict[str, Any]:
    """The workflow as Argo reports it after ``step`` reconciliations (0: just submitted)."""
    meta = m.ObjectMeta(name=name, namespace=NS, labels={**labels, "workflows.argoproj.io/workflow-template": template})
    spec = m.WorkflowSpec(workflow_template_ref=m.WorkflowTemplateRef(name=template))
    if step == 0:
        return _dump(m.Workflow(metadata=meta, spec=spec))
    build_out = m.Outputs(result="built\n", exit_code="0", parameters=[m.Parameter(name="digest", value="sha256:ab")])
    pod0 = _node(
        name, "0", "build(0)", "Pod", "Failed", message="Error (exit code 1)", started_at=_t(1), finished_at=_t(2)
    )
    pod1 = _node(name, "1", "build(1)", "Pod", "Succeeded", started_at=_t(3), finished_at=_t(4), outputs=build_out)
    retry = _node(
        name, "r", "build", "Retry", "Succeeded", children=[pod0.id, pod1.id], started_at=_t(1), finished_at=_t(4)
    )
    if step == 1:
        pod1 = _node(name, "1", "build(1)", "Pod", "Running", started_at=_t(3))
        retry = _node(name, "r", "build", "Retry", "Running", children=[pod0.id, pod1.id], started_at=_t(1))
    test_phase = "Running" if step < 3 and not terminated else "Failed"
    test_msg = (
        None
        if test_phase == "Running"
        else ("Stopped with strategy 'Terminate'" if terminated else "Error (exit code 2)")
    )
    test = _node(
        name,
        "t",
        "test",
        "Pod",
        test_phase,
        message=test_msg,
        started_at=_t(5),
        finished_at=None if test_phase == "Running" else _t(9),
    )
    lint = _node(name, "l", "lint", "Skipped", "Omitted", message="omitted: depends condition not met")
    docs = _node(name, "d", "docs", "Skipped", "Skipped", message="when 'false' evaluated false")
    nodes = [pod0, pod1, retry, lint, docs] + ([test] if step >= 2 or terminated else [])
    final = test_phase == "Failed"
    root = m.NodeStatus(
        id=name,
        name=name,
        display_name=name,
        type="DAG",
        phase="Failed" if final else "Running",
        children=[retry.id, docs.id],
        started_at=_t(0),
        finished_at=_t(9) if final else None,
    )
    status = m.WorkflowStatus(
        phase="Failed" if final else "Running",
        message=("Stopped with strategy 'Terminate'" if terminated else "child 'test' failed") if final else None,
        started_at=_t(0),
        finished_at=_t(9) if final else None,
        nodes={n.id: n for n in [root, *nodes]},
    )
    return _dump(m.Workflow(metadata=meta, spec=spec, status=status))


class FakeArgo:
    def __init__(self) -> None:
        self.templates: dict[str, dict[str, Any]] = {}
        self.workflows: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        self.outage = Outage()  # argo.outage.fail_next(n): the next n requests get 503 + Retry-After
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    failure = fake.outage.take()
                    if failure is None:
                        code, answer = fake.route(method, self.path, body, self.headers.get("Authorization"))
                if failure is not None:
                    self._reply(failure.status, failure.body, failure.headers)
                else:
                    self._reply(code, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

        return Handler

    @staticmethod
    def error(code: int, grpc: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"code": GRPC[grpc], "message": message, "details": []}

    def route(self, method: str, path: str, body: Any, auth: str | None) -> tuple[int, Any]:
        if auth != f"Bearer {TOKEN}":
            return self.error(
                401, "Unauthenticated", "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/"
            )
        parts = path.strip("/").split("/")  # api v1 <kind> <ns> [name] [action]
        kind, ns, rest = parts[2], parts[3], parts[4:]
        if ns == "forbidden":
            return self.error(
                403,
                "PermissionDenied",
                'workflows.argoproj.io is forbidden: User "system:serviceaccount:argo:forge" '
                f'cannot list resource "workflows" in the namespace "{ns}"',
            )
        if ns == "broken":
            return self.error(500, "Internal", "etcdserver: request timed out")
        if kind == "workflow-templates" and method == "POST":
            template = body["template"]
            name = template["metadata"]["name"]
            if name == "invalid":
                return self.error(400, "InvalidArgument", "spec.entrypoint: entrypoint template 'main' not defined")
            if name in self.templates:
                return self.error(409, "AlreadyExists", f'workflowtemplates.argoproj.io "{name}" already exists')
            stored = m.WorkflowTemplate.model_validate(template)
            stored.metadata.namespace, stored.metadata.uid = ns, "0b0b"
            self.templates[name] = _dump(stored)
            return 200, self.templates[name]
        if kind == "workflow-templates" and method == "GET":
            if rest[0] not in self.templates:
                return self.error(404, "NotFound", f'workflowtemplates.argoproj.io "{rest[0]}" not found')
            return 200, self.templates[rest[0]]
        if kind == "workflows" and rest == ["submit"]:
            name = body["resourceName"]
            if name not in self.templates:
                return self.error(404, "NotFound", f'workflowtemplates.argoproj.io "{name}" not found')
            labels = dict(kv.split("=", 1) for kv in body["submitOptions"].get("labels", "").split(",") if kv)
            wf = f"{name}-x7k2p"
            self.workflows[wf] = {"template": name, "labels": labels, "step": 0, "terminated": False}
            return 200, _workflow(wf, name, labels, 0, False)
        if kind == "workflows" and rest and rest[0] in self.workflows:
            state = self.workflows[rest[0]]
            if method == "PUT" and rest[1:] == ["terminate"]:
                state["terminated"] = True
            elif method == "GET":
                state["step"] = min(state["step"] + 1, 3)
            return 200, _workflow(rest[0], state["template"], state["labels"], state["step"], state["terminated"])
        return self.error(404, "NotFound", f'workflows.argoproj.io "{rest[0] if rest else ""}" not found')


@pytest.fixture(scope="module")
def argo() -> Iterator[FakeArgo]:
    fake = FakeArgo()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):  # the engine's own attempts, no backoff
        yield


@pytest.fixture
async def engine(argo: FakeArgo) -> AsyncIterator[ArgoWorkflowEngine]:
    argo.requests.clear()
    argo.outage.fail_next(0)
    async with ArgoWorkflowEngine(argo.url, namespace=NS, token=TOKEN, poll_interval=0.01) as e:
        yield e


def template(name: str, command: str = "true") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "rev"}]},
            "templates": [
                {"name": "main", "dag": {"tasks": [{"name": "a", "template": "sh"}]}},
                {"name": "sh", "container": {"image": "alpine:3.20", "command": ["sh", "-c", command]}},
            ],
        },
    }


async def test_create_template_is_idempotent_and_conflicts(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    assert await engine.create_template(template("ci-run-1")) == "ci-run-1"
    method, path, body = argo.requests[-1]
    assert (method, path) == ("POST", f"/api/v1/workflow-templates/{NS}")
    assert body["template"]["metadata"]["name"] == "ci-run-1"
    assert await engine.create_template(template("ci-run-1")) == "ci-run-1"
    assert [r[:2] for r in argo.requests[-2:]] == [
        ("POST", f"/api/v1/workflow-templates/{NS}"),
        ("GET", f"/api/v1/workflow-templates/{NS}/ci-run-1"),
    ]
    with pytest.raises(ConflictError, match="different spec"):
        await engine.create_template(template("ci-run-1", command="false"))


async def test_submit_encodes_parameters_and_labels(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    await engine.create_template(template("ci-run-2"))
    name = await engine.submit(
        "ci-run-2", parameters={"rev": "main", "x": "a=b"}, labels={"forge/run": "42", "team": "ci"}
    )
    assert name == "ci-run-2-x7k2p"
    method, path, body = argo.requests[-1]
    assert (method, path) == ("POST", f"/api/v1/workflows/{NS}/submit")
    assert body["resourceKind"] == "WorkflowTemplate"
    assert body["resourceName"] == "ci-run-2"
    assert body["submitOptions"] == {"parameters": ["rev=main", "x=a=b"], "labels": "forge/run=42,team=ci"}


async def test_status_maps_the_node_tree(engine: ArgoWorkflowEngine) -> None:
    await engine.create_template(template("ci-run-3"))
    name = await engine.submit("ci-run-3", parameters={"rev": "main"}, labels={})
    running = await engine.status(name)  # step 1: build's second attempt runs
    assert running.phase == WorkflowPhase.RUNNING
    assert running.started_at == T0
    assert running.nodes["build"].phase == NodePhase.RUNNING
    assert running.nodes["build"].attempts == 2
    status = await engine.status(name)  # step 2
    status = await engine.status(name)  # step 3: final
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "child 'test' failed"
    assert status.finished_at == T0 + timedelta(seconds=9)
    assert set(status.nodes) == {"build", "test", "lint", "docs"}
    build = status.nodes["build"]
    assert (build.phase, build.attempts) == (NodePhase.SUCCEEDED, 2)
    assert build.outputs == {"result": "built\n", "exitCode": "0", "digest": "sha256:ab"}
    assert (build.started_at, build.finished_at) == (T0 + timedelta(seconds=1), T0 + timedelta(seconds=4))
    test = status.nodes["test"]
    assert (test.phase, test.attempts, test.message) == (NodePhase.FAILED, 1, "Error (exit code 2)")
    assert status.nodes["lint"].phase == NodePhase.OMITTED
    assert status.nodes["lint"].attempts == 0
    assert status.nodes["docs"].phase == NodePhase.SKIPPED


async def test_watch_yields_until_a_final_phase(engine: ArgoWorkflowEngine) -> None:
    await engine.create_template(template("ci-run-4"))
    name = await engine.submit("ci-run-4", parameters={"rev": "main"}, labels={})
    async with asyncio.timeout(10):
        seen = [s async for s in engine.watch(name)]
    assert [s.phase for s in seen] == [WorkflowPhase.RUNNING, WorkflowPhase.RUNNING, WorkflowPhase.FAILED]
    assert "test" not in seen[0].nodes
    assert seen[1].nodes["test"].phase == NodePhase.RUNNING


async def test_stop_terminates(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    await engine.create_template(template("ci-run-5"))
    name = await engine.submit("ci-run-5", parameters={"rev": "main"}, labels={})
    await engine.stop(name, message="cancelled by alice")
    method, path, body = argo.requests[-1]
    assert (method, path, body) == ("PUT", f"/api/v1/workflows/{NS}/{name}/terminate", {"namespace": NS, "name": name})
    status = await engine.status(name)
    assert status.phase == WorkflowPhase.FAILED
    assert status.message == "Stopped with strategy 'Terminate'"
    assert status.nodes["test"].message == "Stopped with strategy 'Terminate'"


async def test_not_found_and_invalid(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    with pytest.raises(NotFoundError, match=r'workflows\.argoproj\.io "nope" not found'):
        await engine.status("nope")
    with pytest.raises(NotFoundError, match=r'workflowtemplates\.argoproj\.io "missing" not found'):
        await engine.submit("missing", parameters={}, labels={})
    with pytest.raises(InvalidInputError, match="entrypoint template 'main' not defined") as info:
        await engine.create_template(template("invalid"))
    assert info.value.details["status"] == 400
    assert len(argo.requests) == 3  # permanent errors are never retried


async def test_auth_and_server_errors(argo: FakeArgo) -> None:
    async with ArgoWorkflowEngine(argo.url, namespace=NS, token="wrong") as bad_token:
        with pytest.raises(PermanentError, match=r"refused the request \(401\): token not valid") as info:
            await bad_token.status("x")
    assert info.value.code == "unauthorized"
    async with ArgoWorkflowEngine(argo.url, namespace="forbidden", token=TOKEN) as forbidden:
        with pytest.raises(PermanentError, match=r"\(403\).*cannot list resource") as info:
            await forbidden.status("x")
    assert not isinstance(info.value, TransientError)
    argo.requests.clear()
    async with ArgoWorkflowEngine(argo.url, namespace="broken", token=f"Bearer {TOKEN}") as broken:
        with pytest.raises(TransientError, match="etcdserver: request timed out") as transient:
            await broken.status("x")
    assert not isinstance(transient.value, ServiceUnavailableError)
    assert len(argo.requests) == RetryPolicy().attempts  # a 500 is retried until the attempts run out


async def test_connection_refused_is_service_unavailable() -> None:
    async with ArgoWorkflowEngine(f"http://127.0.0.1:{free_port()}", namespace=NS) as engine:
        with pytest.raises(ServiceUnavailableError, match="unreachable"):
            await engine.status("x")


async def test_an_argo_outage_is_service_unavailable_with_its_retry_after(argo: FakeArgo) -> None:
    argo.requests.clear()
    argo.outage.fail_next(2, retry_after="7")
    async with ArgoWorkflowEngine(argo.url, namespace=NS, token=TOKEN, retry=RetryPolicy(attempts=1)) as once:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError, match="503 no healthy upstream") as info:
                await once.status("ci-run-1")
            assert info.value.retry_after == 7.0
            assert info.value.details == {"status": 503, "request": f"GET /api/v1/workflows/{NS}/ci-run-1"}
        with pytest.raises(NotFoundError):  # Argo is back: its own answer comes through
            await once.status("ci-run-1")
    assert (argo.outage.failed, len(argo.requests)) == (2, 3)


async def test_calls_are_retried_until_argo_recovers(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    argo.outage.fail_next(3)
    assert await engine.create_template(template("ci-run-6")) == "ci-run-6"
    assert argo.outage.failed == 3
    assert [r[:2] for r in argo.requests] == [("POST", f"/api/v1/workflow-templates/{NS}")] * 4
    name = await engine.submit("ci-run-6", parameters={"rev": "main"}, labels={})
    argo.outage.fail_next(4)
    assert (await engine.status(name)).phase == WorkflowPhase.RUNNING
    argo.outage.fail_next(RetryPolicy().attempts + 1)
    with pytest.raises(ServiceUnavailableError) as info:  # longer than the engine's attempts
        await engine.status(name)
    assert info.value.retry_after == 1.0
    assert (argo.outage.failed, argo.outage.remaining) == (RetryPolicy().attempts, 1)


async def test_a_long_retry_after_is_left_to_the_caller(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    argo.outage.fail_next(3, retry_after="60")  # above RetryPolicy.longest_retry_after
    with pytest.raises(ServiceUnavailableError) as info:
        await engine.status("ci-run-1")
    assert info.value.retry_after == 60.0
    assert argo.outage.failed == 1


async def test_submit_is_repeated_only_when_argo_did_not_take_it(engine: ArgoWorkflowEngine, argo: FakeArgo) -> None:
    await engine.create_template(template("ci-run-7"))
    argo.requests.clear()
    argo.outage.fail_next(1, status=503)  # refused: nothing was started
    assert await engine.submit("ci-run-7", parameters={"rev": "main"}, labels={}) == "ci-run-7-x7k2p"
    assert len(argo.requests) == 2
    argo.outage.fail_next(1, status=504, message="upstream request timeout")  # it may have started one
    with pytest.raises(ServiceUnavailableError, match="504 upstream request timeout"):
        await engine.submit("ci-run-7", parameters={"rev": "main"}, labels={})
    assert len(argo.requests) == 3


def test_outage_switch() -> None:
    outage = Outage()
    assert outage.take() is None
    outage.fail_next(2, status=502, retry_after=None)
    first, second = outage.take(), outage.take()
    assert first is not None
    assert first == second
    assert (first.status, first.headers, outage.take()) == (502, {}, None)
    assert (outage.failed, outage.remaining) == (2, 0)

"""One pipeline, one trace: the API, the controller and the workers export spans by OTLP/HTTP to a local
receiver, and the run's trace (trace id = run id) holds them all, parent to child (issue 11, item 4).

The receiver is a real HTTP server decoding ``ExportTraceServiceRequest`` protobufs (opentelemetry-proto),
as Alloy's or a collector's OTLP/HTTP receiver would; the processes export in batches every 100 ms.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from forge.embedded.process import ServiceProcess, free_port
from forge.observability.tracing import root_span_id
from forge.testing.platform import Platform
from forge.testing.postgres import create_database

from .conftest import running_platform
from .support import hello_files, make_repo, wait_run, wait_until

PROJECT = """name: app
phases:
  test:
    steps:
      - {name: unit, run: "echo traced"}
"""


@dataclass(frozen=True)
class _Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class _Receiver:
    """An OTLP/HTTP traces endpoint on loopback, keeping every span it was sent."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.accept(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def accept(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                received += [
                    _Span(
                        service=attributes.get("service.name", "?"),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                    )
                    for span in scope_spans.spans
                ]
        with self._lock:
            self.spans += received

    def trace(self, trace_id: str) -> list[_Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[_Receiver]:
    receiver = _Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    nats_server: ServiceProcess,
    s3_server: ServiceProcess,
    postgres_server: ServiceProcess,
    receiver: _Receiver,
) -> Iterator[Platform]:
    database = create_database(postgres_server.url, f"e2e_{uuid.uuid4().hex[:12]}")
    home = tmp_path_factory.mktemp("platform")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "FORGE_LOG_FORMAT": "json",
    }
    with running_platform(home, database, nats_server, s3_server, **env) as platform:
        yield platform


def test_one_trace_covers_the_api_the_controller_and_the_workers(
    platform: Platform, client: httpx.Client, receiver: _Receiver
) -> None:
    name, sha = make_repo(platform, client, {"app/.forge/project.yaml": PROJECT})
    created = client.post("/v1/runs", json={"repository": name, "commit_sha": sha, "branch": "main"})
    assert created.status_code == 201, created.text
    run_id = uuid.UUID(created.json()["id"])
    run = wait_run(client, str(run_id), platform)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"

    wanted = {"forge-api", "forge-controller", "forge-worker-discovery", "forge-worker-ci"}

    def whole() -> bool:
        """Every service has exported, and every span's parents have arrived (a span is sent when it ends)."""
        spans = receiver.trace(run_id.hex)
        ids = {s.span_id for s in spans}
        return wanted <= {s.service for s in spans} and all(not s.parent_id or s.parent_id in ids for s in spans)

    wait_until(whole, platform, timeout=30)
    spans = receiver.trace(run_id.hex)
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent_id == ""]
    assert (root.service, root.name) == ("forge-api", "POST /v1/runs")
    assert root.span_id == format(root_span_id(run_id), "016x")
    for job_type in ("discovery", "ci"):
        jobs = [s for s in spans if s.name == f"job {job_type}"]
        assert jobs, f"no job {job_type} span"
        for job in jobs:  # each worker span hangs under the controller's dispatch of it, under the API's root
            dispatch = by_id[job.parent_id]
            assert (dispatch.service, dispatch.name) == ("forge-controller", f"dispatch {job_type}")
            chain = [dispatch]
            while chain[-1].parent_id:
                chain.append(by_id[chain[-1].parent_id])
            assert chain[-1] == root
    assert any(s.name == "submit workflow" and s.service == "forge-controller" for s in spans)
    # JSON logs name the run and its trace (the controller logs the run's discovery and its workflow)
    lines = (platform.logs / "controller.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    about_run = [e for e in entries if e.get("run_id") == str(run_id)]
    assert about_run
    assert {(e["service"], e["trace_id"]) for e in about_run} == {("forge-controller", run_id.hex)}


def test_the_trace_goes_on_through_the_release_and_the_pointer_commit(
    platform: Platform, client: httpx.Client, receiver: _Receiver
) -> None:
    """A push that releases and auto-deploys to dev: its artifact and release jobs, the deployment and
    its GitOps pointer commit are spans of the same run's trace (issue 11 item 4: ... → release → pointer
    commit)."""
    name, sha = make_repo(platform, client, hello_files("traced release"))
    created = client.post("/v1/runs", json={"repository": name, "commit_sha": sha, "branch": "main"})
    assert created.status_code == 201, created.text
    run_id = uuid.UUID(created.json()["id"])
    run = wait_run(client, str(run_id), platform, timeout=180)
    assert run["status"] == "success", f"{run['error']}\n{platform.log_tail()}"

    def deployed() -> bool:
        spans = receiver.trace(run_id.hex)
        ids = {s.span_id for s in spans}
        names = {s.name for s in spans}
        return {"job release", "gitops.commit"} <= names and all(not s.parent_id or s.parent_id in ids for s in spans)

    wait_until(deployed, platform, timeout=60)
    spans = receiver.trace(run_id.hex)
    by_id = {s.span_id: s for s in spans}
    root = format(root_span_id(run_id), "016x")

    def under_root(span: _Span) -> bool:
        while span.parent_id:
            span = by_id[span.parent_id]
        return span.span_id == root

    for job_type in ("artifact", "release"):
        (job,) = [s for s in spans if s.name == f"job {job_type}"]
        assert by_id[job.parent_id].name == f"dispatch {job_type}"
        assert job.service == "forge-worker-artifact-release"  # one worker process serves both here
        assert under_root(job)
    (deploy,) = [s for s in spans if s.name == "deployment.deploy"]
    (commit,) = [s for s in spans if s.name == "gitops.commit"]
    assert (deploy.service, commit.service) == ("forge-controller", "forge-controller")
    assert commit.parent_id == deploy.span_id
    assert under_root(deploy)

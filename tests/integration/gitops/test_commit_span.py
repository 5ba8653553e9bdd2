"""The pointer commit is a ``gitops.commit`` span, child of the deployment reconciler's ``deployment.deploy``
span, in the trace of the run that made the release (trace id = run id).

A real GitOps repository on disk and the memory store; spans go to the OpenTelemetry SDK's in-memory exporter
through a tracer provider of this test's own (the process-wide one belongs to tests/unit/observability)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer
from prometheus_client import REGISTRY
from tests.integration.gitops.support import COMMIT_1, DIGEST_1, change, make_writer, racing_writer

import forge.controller.reconcilers.deployments as deployments_module
import forge.gitops.writer as writer_module
from forge.controller.reconcilers.deployments import DeploymentReconciler
from forge.domain.entities import Trigger
from forge.domain.status import DeploymentStatus
from forge.errors import NotFoundError
from forge.observability.tracing import root_span_id
from forge.ports.fakes import MemoryStore
from forge.ports.store import NewDeployment, NewRelease, NewRepository, NewRun

REPO = "acme/shop"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    local: Tracer = provider.get_tracer("forge")
    monkeypatch.setattr(writer_module, "tracer", lambda: local)
    monkeypatch.setattr(deployments_module, "tracer", lambda: local)
    yield exporter
    provider.shutdown()


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_the_pointer_commit_is_a_child_span_of_the_deploy_in_the_runs_trace(
    remote: Path, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    store = MemoryStore()
    await store.register_repository(NewRepository(REPO, "https://git.example/acme/shop.git"))
    run, _ = await store.create_run(NewRun(repository=REPO, commit_sha=COMMIT_1, branch="main"))
    release, _ = await store.record_release(
        NewRelease(
            repository=REPO,
            project="api",
            commit_sha=COMMIT_1,
            oci_ref=f"registry.test/{REPO}/api@{DIGEST_1}",
            oci_digest=DIGEST_1,
            trigger=Trigger.PUSH,
            created_by="forge-controller",
            branch="main",
            run_id=run.id,
        )
    )
    # another writer lands a commit right after our first fetch: one non-fast-forward re-plan
    other = make_writer(str(remote), tmp_path / "other")
    writer, _ = racing_writer(str(remote), tmp_path / "work", other, change(project="web"))
    reconciler = DeploymentReconciler(deployments=store, approvals=store, releases=store, runs=store, writer=writer)
    asked, _ = await store.request_deployment(NewDeployment(release.id, "dev", "alice", "ship it"))
    retries_before = _push_retries("dev")

    [active] = await reconciler.deploy_pending()

    head = str(pygit2.Repository(str(remote)).revparse_single("refs/heads/main").id)
    assert (active.status, active.gitops_commit) == (DeploymentStatus.ACTIVE, head)
    [deploy] = _named(spans, "deployment.deploy")
    assert deploy.context is not None
    # the racing writer's deploy runs inside our commit's thread, so its span hangs below ours
    [commit] = [s for s in _named(spans, "gitops.commit") if s.parent and s.parent.span_id == deploy.context.span_id]
    assert commit.context is not None
    assert commit.context.trace_id == deploy.context.trace_id == run.id.int  # the run's trace
    assert deploy.parent is not None
    assert deploy.parent.span_id == root_span_id(run.id)
    assert dict(commit.attributes or {}) == {
        "forge.environment": "dev",
        "forge.repository": REPO,
        "forge.project": "api",
        "forge.release.number": 1,
        "forge.release.commit": COMMIT_1,
        "forge.release.digest": DIGEST_1,
        "forge.gitops.changed": True,
        "forge.gitops.retries": 1,
        "forge.gitops.commit": head,
    }
    assert dict(deploy.attributes or {}) == {
        "forge.deployment_id": str(asked.id),
        "forge.environment": "dev",
        "forge.repository": REPO,
        "forge.project": "api",
        "forge.release.number": 1,
        "forge.run_id": str(run.id),
        "forge.gitops.commit": head,
    }
    assert commit.status.status_code is StatusCode.UNSET
    assert _push_retries("dev") == retries_before + 1  # forge_gitops_push_retries_total


async def test_a_failed_commit_is_an_error_span(remote: Path, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    writer = make_writer(str(remote), tmp_path / "work")
    with pytest.raises(NotFoundError, match="environment 'qa' does not exist"):
        await writer.deploy(change(environment="qa"))
    [commit] = _named(spans, "gitops.commit")
    assert commit.status.status_code is StatusCode.ERROR
    assert "forge.gitops.commit" not in (commit.attributes or {})
    assert commit.events[0].name == "exception"


def _push_retries(environment: str) -> float:
    return REGISTRY.get_sample_value("forge_gitops_push_retries_total", {"environment": environment}) or 0.0

"""Artifact and release jobs on real NATS JetStream, S3, git and an OCI registry (docker-registry).

Jobs go through the worker runtime (results stored in ``pipeline-results``, as in production), so
the release job reads its artifacts' fields where the dispatcher would; what was pushed is pulled
back from the registry and checked there, not taken from the workers' word.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.oras_registry import OrasRegistry
from forge.adapters.pygit2_git import Pygit2Mirrors, Pygit2Reader
from forge.discovery import discover
from forge.domain.discovery import DiscoveredProject
from forge.domain.events import EVENTS_STREAM, StepEvent, event_subject
from forge.domain.messages import STREAMS, ArtifactPayload, Job, JobType, ReleasePayload, Result
from forge.embedded.process import ServiceProcess
from forge.errors import NotFoundError, PermanentError
from forge.jobs.dispatch import dispatch
from forge.jobs.events import StepEventPublisher
from forge.logs import log_key
from forge.ports.registry import sha256_digest
from forge.releases import unpack_resources
from forge.releases.media_types import RELEASE_ARTIFACT_TYPE, RELEASE_METADATA, RESOURCES
from forge.releases.metadata import ArtifactMetadata, ReleaseMetadata
from forge.settings import CiSettings, WorkerSettings
from forge.testing.gitrepos import commit_files
from forge.workflows.workers.artifacts import ArtifactHandler
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.releases import ReleaseHandler
from forge.workflows.workers.runtime import Handler, Worker

FAST = WorkerSettings(concurrency=2, ack_wait=5.0, heartbeat=0.5, max_deliver=2, fetch_wait=0.2)
EXAMPLE = Path(__file__).parents[3] / "examples" / "monorepo" / "services" / "hello"
REPOSITORY = "acme/mono"
PROJECT = """\
name: hello
release:
  on: [{branch: main}]
artifacts:
  hello:
    type: container
    producer: {run: "%s", output: dist/image}
deploy:
  resources:
%s
"""
DEPLOYMENT = """\
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: hello}
      spec:
        replicas: "${{ env.replicas }}"
        selector: {matchLabels: {app: hello}}
        template:
          metadata: {labels: {app: hello}}
          spec:
            containers:
              - {name: hello, image: "${{ artifacts.hello.ref }}"}
"""


@dataclass
class Repo:
    path: Path
    commit: str
    project: DiscoveredProject


def _repo(path: Path, producer: str = "python3 build_image.py dist/image", resources: str = DEPLOYMENT) -> Repo:
    commit = commit_files(
        path,
        {
            "svc/hello/.forge/project.yaml": PROJECT % (producer, resources.rstrip("\n")),
            "svc/hello/build_image.py": (EXAMPLE / "build_image.py").read_bytes(),
            "svc/hello/main.py": (EXAMPLE / "main.py").read_bytes(),
        },
    )
    found = discover(Pygit2Reader(path), commit, None, branch="main")
    return Repo(path, commit, found.projects[0])


@dataclass
class Workers:
    bus: NatsBus
    registry: OrasRegistry
    run_id: UUID

    def artifact_job(self, repo: Repo) -> Job:
        payload = ArtifactPayload(
            clone_url=str(repo.path),
            project="hello",
            project_path=repo.project.path,
            config_blob=repo.project.config_blob,
            artifact="hello",
            timeout_seconds=120,
            step_execution_id=uuid4(),
        )
        return self._job(JobType.ARTIFACT, f"artifact.{self.run_id}.hello.hello.a0", repo, payload)

    def release_job(self, repo: Repo) -> Job:
        payload = ReleasePayload(
            clone_url=str(repo.path),
            project="hello",
            project_path=repo.project.path,
            config_blob=repo.project.config_blob,
            trigger="push",
            branch="main",
            requested_by="octocat",
            artifacts={"hello": f"artifact.{self.run_id}.hello.hello.a0"},
            timeout_seconds=120,
            step_execution_id=uuid4(),
        )
        return self._job(JobType.RELEASE, f"release.{self.run_id}.hello.a0", repo, payload)

    def _job(self, job_type: JobType, key: str, repo: Repo, payload: ArtifactPayload | ReleasePayload) -> Job:
        return Job(
            key=key,
            type=job_type,
            run_id=self.run_id,
            repository=REPOSITORY,
            commit_sha=repo.commit,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(minutes=5),
        )

    async def run(self, job: Job) -> Result:
        return await dispatch(self.bus, job, timeout=120)

    async def last_event(self) -> StepEvent:
        data = await self.bus.last_payload(EVENTS_STREAM, event_subject(self.run_id))
        assert data is not None
        return StepEvent.model_validate_json(data)


@pytest.fixture
async def workers(
    tmp_path: Path, bus: NatsBus, objects: MinioObjectStore, registry_server: ServiceProcess
) -> AsyncIterator[Workers]:
    registry = OrasRegistry(registry_server.url)
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    events = StepEventPublisher(bus)
    ci = CiHandler(
        mirrors=mirrors,
        objects=objects,
        secrets=_NoSecrets(),
        settings=CiSettings(work_dir=tmp_path / "work", kill_grace=1.0, log_interval=0.2),
        events=events,
    )
    handlers: dict[JobType, Handler] = {
        JobType.ARTIFACT: ArtifactHandler(ci=ci, registry=registry, objects=objects, bucket="b", retry_for=0.5),
        JobType.RELEASE: ReleaseHandler(
            mirrors=mirrors, objects=objects, bus=bus, registry=registry, events=events, retry_for=0.5
        ),
    }
    await bus.ensure_streams(STREAMS)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for job_type, handler in handlers.items():
            worker = Worker(job_type=job_type, handler=handler, bus=bus, objects=objects, settings=FAST)
            await worker.prepare()
            group.create_task(worker.run(stop))
        try:
            yield Workers(bus, registry, uuid4())
        finally:
            stop.set()


class _NoSecrets:
    async def get(self, name: str) -> str:
        raise NotFoundError(f"no secret {name}")


async def test_an_artifact_and_its_release_are_pushed_and_pulled_back_by_digest(
    tmp_path: Path, workers: Workers, objects: MinioObjectStore
) -> None:
    repo = _repo(tmp_path / "repo.git")
    artifact = await workers.run(workers.artifact_job(repo))
    assert artifact.success, artifact.error
    assert artifact.data is not None
    image = f"{REPOSITORY}/hello/hello"
    ref = workers.registry.reference(image, artifact.data["digest"])
    assert artifact.data["ref"] == ref
    assert artifact.data["tag"] == f"sha-{repo.commit}"
    pushed = await workers.registry.manifest(image, artifact.data["digest"])
    assert pushed.media_type == "application/vnd.oci.image.manifest.v1+json"  # the image itself
    tracking = await workers.registry.manifest(image, f"sha-{repo.commit}")
    assert tracking.digest == artifact.data["tracking_digest"]
    (meta_layer,) = tracking.content["layers"]
    meta = ArtifactMetadata.from_bytes(await workers.registry.blob(image, meta_layer["digest"], max_bytes=1 << 20))
    assert (meta.ref, meta.digest, meta.commit_sha) == (ref, artifact.data["digest"], repo.commit)
    log = (await objects.get(log_key(workers.run_id, "release", "hello", "artifact-hello"))).decode()
    assert "wrote dist/image" in log
    assert "forge: published artifact hello" in log

    release = await workers.run(workers.release_job(repo))
    assert release.success, release.error
    assert release.data is not None
    digest = release.data["oci_digest"]
    manifest = await workers.registry.manifest(f"{REPOSITORY}/hello", digest)
    assert manifest.artifact_type == RELEASE_ARTIFACT_TYPE
    assert manifest.content["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert [layer["mediaType"] for layer in manifest.content["layers"]] == [RELEASE_METADATA, RESOURCES]
    assert (await workers.registry.manifest(f"{REPOSITORY}/hello", f"sha-{repo.commit}")).digest == digest
    metadata_layer, resources_layer = manifest.content["layers"]
    metadata = ReleaseMetadata.from_bytes(
        await workers.registry.blob(f"{REPOSITORY}/hello", metadata_layer["digest"], max_bytes=1 << 20)
    )
    assert (metadata.project, metadata.commit_sha, metadata.branch, metadata.created_by) == (
        "hello",
        repo.commit,
        "main",
        "octocat",
    )
    assert [(a.name, a.ref) for a in metadata.artifacts] == [("hello", ref)]
    objects_back = unpack_resources(
        await workers.registry.blob(f"{REPOSITORY}/hello", resources_layer["digest"], max_bytes=1 << 20)
    )
    (deployment,) = objects_back
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == ref
    assert deployment["spec"]["replicas"] == "${{ env.replicas }}"  # left for the CMP

    event = await workers.last_event()
    assert event.kind == "success"
    assert event.release is not None
    assert (event.release.oci_digest, event.release.created_by) == (digest, "octocat")
    assert [a.tracking_digest for a in event.release.artifacts] == [artifact.data["tracking_digest"]]

    # Another run of the same commit (a tag pushed on it): the artifact and the release are reused.
    rerun = Workers(workers.bus, workers.registry, uuid4())
    artifact_again = await rerun.run(rerun.artifact_job(repo))
    assert artifact_again.success
    assert artifact_again.data is not None
    assert {k: artifact_again.data[k] for k in ("ref", "digest", "tracking_digest")} == {
        k: artifact.data[k] for k in ("ref", "digest", "tracking_digest")
    }
    log = (await objects.get(log_key(rerun.run_id, "release", "hello", "artifact-hello"))).decode()
    assert "is already published" in log
    assert "wrote dist/image" not in log  # the producer did not run again
    again = await rerun.run(rerun.release_job(repo))
    assert again.success
    assert again.data is not None
    assert again.data["oci_digest"] == digest
    assert "reused" in (await objects.get(log_key(rerun.run_id, "release", "hello", "release"))).decode()
    assert (await rerun.last_event()).release is not None


@pytest.mark.parametrize(
    ("producer", "cause"),
    [
        ("true", "the producer left no output: dist/image should be an OCI image-layout directory"),
        ("mkdir -p dist/image", "oci-layout"),
        ("exit 3", "exit"),
        (
            "python3 build_image.py dist/image && ln -s /etc/hostname dist/image/blobs/sha256/x",
            "blobs/sha256/x is a link or a special file",
        ),
    ],
)
async def test_a_producer_without_a_valid_output_fails_its_step_with_the_cause(
    tmp_path: Path, workers: Workers, objects: MinioObjectStore, producer: str, cause: str
) -> None:
    repo = _repo(tmp_path / "repo.git", producer=producer)
    result = await workers.run(workers.artifact_job(repo))
    assert not result.success
    assert result.error is not None
    assert cause in result.error.message
    log = (await objects.get(log_key(workers.run_id, "release", "hello", "artifact-hello"))).decode()
    assert cause in log
    event = await workers.last_event()
    assert (event.kind, event.release) == ("failed", None)
    with pytest.raises(NotFoundError):
        await workers.registry.manifest(f"{REPOSITORY}/hello/hello", f"sha-{repo.commit}")


async def test_a_resource_without_kind_fails_the_release_and_pushes_nothing(
    tmp_path: Path, workers: Workers, objects: MinioObjectStore
) -> None:
    broken = "    - apiVersion: v1\n      metadata: {name: x}\n"
    repo = _repo(tmp_path / "repo.git", resources=broken)
    assert (await workers.run(workers.artifact_job(repo))).success
    result = await workers.run(workers.release_job(repo))
    assert not result.success
    assert result.error is not None
    assert "deploy.resources[0]" in result.error.message
    assert "kind" in result.error.message
    log = (await objects.get(log_key(workers.run_id, "release", "hello", "release"))).decode()
    assert "deploy.resources[0]" in log
    with pytest.raises(NotFoundError):
        await workers.registry.manifest(f"{REPOSITORY}/hello", f"sha-{repo.commit}")
    assert (await workers.last_event()).kind == "failed"


async def test_a_release_whose_artifact_failed_names_it(tmp_path: Path, workers: Workers) -> None:
    repo = _repo(tmp_path / "repo.git", producer="exit 1")
    assert not (await workers.run(workers.artifact_job(repo))).success
    result = await workers.run(workers.release_job(repo))
    assert not result.success
    assert result.error is not None
    assert "artifact hello was not published" in result.error.message


async def test_a_registry_that_stays_down_fails_the_step_with_its_cause(
    tmp_path: Path, bus: NatsBus, objects: MinioObjectStore
) -> None:
    down = OrasRegistry("http://127.0.0.1:9")  # nothing listens on the discard port
    repo = _repo(tmp_path / "repo.git")
    ci = CiHandler(
        mirrors=Pygit2Mirrors(tmp_path / "cache"),
        objects=objects,
        secrets=_NoSecrets(),
        settings=CiSettings(work_dir=tmp_path / "work", kill_grace=1.0, log_interval=0.2),
    )
    handler = ArtifactHandler(ci=ci, registry=down, objects=objects, bucket="b", retry_for=0.2)
    job = Workers(bus, down, uuid4()).artifact_job(repo)
    with pytest.raises(PermanentError, match=r"publishing artifact hello failed: .*127\.0\.0\.1:9") as failed:
        await handler(job)
    assert failed.value.code == "step_failed"
    log = (await objects.get(log_key(job.run_id, "release", "hello", "artifact-hello"))).decode()
    assert "forge: publishing artifact hello failed: " in log


FILE_PROJECT = """\
name: hello
artifacts:
  tool:
    type: binary
    producer: {run: "mkdir -p out && printf 'binary bytes' > out/tool", output: out/tool}
    publishers: [oci, s3]
  docs:
    type: archive
    producer: {run: "mkdir -p out && printf 'archive bytes' > out/docs.tgz", output: out/docs.tgz}
    publishers: [s3]
"""


async def test_files_are_published_to_the_registry_and_the_object_store(
    tmp_path: Path, workers: Workers, objects: MinioObjectStore
) -> None:
    path = tmp_path / "repo.git"
    commit = commit_files(path, {"svc/hello/.forge/project.yaml": FILE_PROJECT})
    project = discover(Pygit2Reader(path), commit, None).projects[0]
    repo = Repo(path, commit, project)

    def job(artifact: str) -> Job:
        base = workers.artifact_job(repo)
        assert isinstance(base.payload, ArtifactPayload)
        payload = base.payload.model_copy(update={"artifact": artifact})
        return base.model_copy(update={"key": f"artifact.{workers.run_id}.hello.{artifact}.a0", "payload": payload})

    tool = await workers.run(job("tool"))
    assert tool.success, tool.error
    assert tool.data is not None
    pushed = await workers.registry.manifest(f"{REPOSITORY}/hello/tool", tool.data["digest"])
    (layer,) = pushed.content["layers"]
    assert layer["annotations"]["org.opencontainers.image.title"] == "tool"
    assert await workers.registry.blob(f"{REPOSITORY}/hello/tool", layer["digest"], max_bytes=100) == b"binary bytes"
    key = f"artifacts/{REPOSITORY}/hello/tool/{commit}/tool"
    assert await objects.get(key) == b"binary bytes"
    assert tool.data["url"] == f"s3://b/{key}"
    assert [p["publisher"] for p in tool.data["published"]] == ["oci", "s3"]

    docs = await workers.run(job("docs"))
    assert docs.success, docs.error
    assert docs.data is not None
    docs_key = f"artifacts/{REPOSITORY}/hello/docs/{commit}/docs.tgz"
    assert await objects.get(docs_key) == b"archive bytes"
    assert docs.data["ref"] == docs.data["url"] == f"s3://b/{docs_key}"  # nowhere in the registry
    assert docs.data["digest"] == sha256_digest(b"archive bytes")
    tracking = await workers.registry.manifest(f"{REPOSITORY}/hello/docs", f"sha-{commit}")
    assert tracking.digest == docs.data["tracking_digest"]


@pytest.mark.parametrize(("granted", "outcome"), [(["REG_TOKEN"], "success"), ([], "not granted")])
async def test_a_producer_reads_only_granted_secrets(
    tmp_path: Path,
    bus: NatsBus,
    objects: MinioObjectStore,
    registry_server: ServiceProcess,
    granted: list[str],
    outcome: str,
) -> None:
    producer = 'test \\"$REG_TOKEN\\" = s3cret && python3 build_image.py dist/image'
    path = tmp_path / "repo.git"
    commit = commit_files(
        path,
        {
            "svc/hello/.forge/project.yaml": (PROJECT % (producer, DEPLOYMENT.rstrip("\n"))).replace(
                "output: dist/image}", "output: dist/image, secrets: [REG_TOKEN]}"
            ),
            "svc/hello/build_image.py": (EXAMPLE / "build_image.py").read_bytes(),
            "svc/hello/main.py": f"print({granted!r})\n",
        },
    )
    repo = Repo(path, commit, discover(Pygit2Reader(path), commit, None).projects[0])
    ci = CiHandler(
        mirrors=Pygit2Mirrors(tmp_path / "cache"),
        objects=objects,
        secrets=EnvSecretProvider(environ={"FORGE_SECRET_REG_TOKEN": "s3cret"}),
        settings=CiSettings(work_dir=tmp_path / "work", kill_grace=1.0, log_interval=0.2),
    )
    registry = OrasRegistry(registry_server.url)
    handler = ArtifactHandler(ci=ci, registry=registry, objects=objects, bucket="b", retry_for=0.5)
    job = Workers(bus, registry, uuid4()).artifact_job(repo)
    assert isinstance(job.payload, ArtifactPayload)
    job = job.model_copy(update={"payload": job.payload.model_copy(update={"granted_secrets": granted})})
    if outcome == "success":
        assert (await handler(job))["digest"].startswith("sha256:")
    else:
        with pytest.raises(PermanentError, match="not granted"):
            await handler(job)
    log = (await objects.get(log_key(job.run_id, "release", "hello", "artifact-hello"))).decode()
    assert "s3cret" not in log

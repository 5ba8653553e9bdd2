"""Artifact jobs: build one artifact with its producer and publish it (DESIGN §1, §8; issue 8).

The producer is a step like any CI step (same checkout, sandbox, timeout, secrets, live log and
events, run by :class:`~forge.workflows.workers.ci.CiHandler`); once it succeeded, its ``output`` is
published from the step's directory before the step reports its outcome:

- ``container``: ``output`` is an OCI image-layout directory, pushed by digest to
  ``<registry>/<owner>/<repo>/<project>/<artifact>``;
- ``binary`` / ``archive``: ``output`` is one file, pushed as a one-layer OCI artifact there
  (publisher ``oci``) and/or stored in the object store (publisher ``s3``);
- every artifact gets a tracking image ``…/<artifact>:sha-<commit>``: an OCI artifact whose one
  layer is the :class:`~forge.releases.ArtifactMetadata` (where it was published, by digest).

The job's result carries the artifact's fields (``ref``, ``digest``, ``url``, ``repository``,
``tag``) plus ``tracking_ref``/``tracking_digest``/``published``: the release job reads them by
the job's key. A producer that fails or leaves no (or an invalid) output fails the step with a
one-line cause in its log and in the run; a registry outage is retried for ``retry_for`` seconds,
then fails it the same way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import stamina

from forge.discovery.load import load_config
from forge.domain.config import RELEASE_PHASE, ArtifactConfig, ProjectConfig
from forge.domain.messages import ArtifactPayload, CiPayload, Job
from forge.errors import (
    ForgeError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from forge.logs import log_key
from forge.ports import ArtifactRegistry, GitMirrors, ObjectStore
from forge.ports.registry import Layer, sha256_digest
from forge.releases import ArtifactMetadata, Publication, artifact_fields, tracking_tag
from forge.releases.media_types import ARTIFACT_METADATA, TRACKING_ARTIFACT_TYPE
from forge.releases.metadata import MAX_METADATA_BYTES
from forge.releases.naming import oci_repository
from forge.retrying import transient
from forge.workflows.workers.ci import CiHandler
from forge.workflows.workers.executors import Sink
from forge.workflows.workers.step_report import StepReport

__all__ = ["MAX_FILE_BYTES", "ArtifactHandler", "project_config", "retried"]

T = TypeVar("T")

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Largest binary or archive published (read into memory once)."""
FILE_MEDIA_TYPE = {"binary": "application/vnd.forge.binary.v1", "archive": "application/vnd.forge.archive.v1"}


async def project_config(mirrors: GitMirrors, job: Job, clone_url: str, config_blob: str) -> ProjectConfig:
    """The project's configuration at the job's commit, read from its blob (discovery validated it)."""
    reader = await mirrors.sync(job.repository, clone_url, want=job.commit_sha)
    loaded = load_config(await asyncio.to_thread(reader.read_blob, config_blob), ProjectConfig)
    if loaded.config is None:
        reasons = "; ".join(f"{i.field}: {i.reason}" for i in loaded.issues)
        raise PermanentError(f"project config blob {config_blob} is invalid: {reasons}", code="invalid_config")
    return loaded.config


@dataclass
class ArtifactHandler:
    ci: CiHandler
    registry: ArtifactRegistry
    objects: ObjectStore
    bucket: str
    retry_for: float = 60.0

    async def __call__(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        if not isinstance(payload, ArtifactPayload):
            raise InvalidInputError(f"job {job.key} carries a {payload.type} payload, not artifact")
        try:
            config = await project_config(self.ci.mirrors, job, payload.clone_url, payload.config_blob)
            artifact = config.artifacts.get(payload.artifact)
            if artifact is None:
                raise PermanentError(f"project {payload.project} declares no artifact {payload.artifact!r}")
            reused = await self._published(job, payload)
        except ForgeError as exc:  # before the producer: reported as the step's outcome all the same
            await self._report(job, payload).failed(exc.message)
            name = f"{RELEASE_PHASE}/{payload.project}/artifact-{payload.artifact}"
            raise PermanentError(f"step {name}: {exc.message}", code="step_failed") from exc
        if reused is not None:
            return reused
        producer = artifact.producer
        step = CiPayload(
            clone_url=payload.clone_url,
            phase=RELEASE_PHASE,
            project=payload.project,
            project_path=payload.project_path,
            step=f"artifact-{payload.artifact}",
            action="run" if producer.run is not None else "earthly",
            target=producer.target,
            args=producer.args,
            env=producer.env,
            secrets=producer.secrets,
            granted_secrets=[name for name in producer.secrets if name in payload.granted_secrets],
            timeout_seconds=payload.timeout_seconds,
            attempt=payload.attempt,
            step_execution_id=payload.step_execution_id,
        )
        return await self.ci.run_step(job, step, partial(self._publish, job, payload, artifact))

    async def resume(self, job: Job, state: dict[str, Any]) -> None:
        """Finish a producer step a dead worker settled (its log and final event), as a CI step is."""
        await self.ci.resume(job, state)

    async def _published(self, job: Job, payload: ArtifactPayload) -> dict[str, Any] | None:
        """The artifact's fields when its tracking image for this commit exists (an earlier run of the commit
        published it): the producer does not run again, so a release names exactly what was published."""
        repository = oci_repository(job.repository, payload.project, payload.artifact)
        tag = tracking_tag(job.commit_sha)
        try:
            tracking = await self._retried(
                f"artifact {payload.artifact}", lambda: self.registry.manifest(repository, tag)
            )
        except NotFoundError:
            return None
        layer = next(
            (la for la in tracking.content.get("layers", []) if la.get("mediaType") == ARTIFACT_METADATA), None
        )
        if layer is None:
            raise PermanentError(f"{repository}:{tag} is not a tracking image (no artifact metadata layer)")
        metadata = ArtifactMetadata.from_bytes(
            await self.registry.blob(repository, layer["digest"], max_bytes=MAX_METADATA_BYTES)
        )
        report = self._report(job, payload)
        await report.write(
            f"artifact {payload.artifact} of {job.commit_sha[:12]} is already published ({metadata.ref}); "
            "its producer does not run again"
        )
        await report.succeeded()
        url = next((p.location for p in metadata.publishers if p.type == "s3"), None)
        fields = artifact_fields(metadata.ref.rpartition("@")[0], metadata.digest, job.commit_sha, url=url)
        return {
            **fields,
            "name": payload.artifact,
            "type": metadata.type,
            "tracking_ref": self._ref(repository, tracking.digest),
            "tracking_digest": tracking.digest,
            "published": [p.model_dump(mode="json") for p in metadata.publishers],
            "exit_code": 0,
            "logs_key": report.key,
        }

    def _report(self, job: Job, payload: ArtifactPayload) -> StepReport:
        key = log_key(job.run_id, RELEASE_PHASE, payload.project, f"artifact-{payload.artifact}")
        return StepReport(self.objects, self.ci.events, job, payload.step_execution_id, payload.attempt + 1, key)

    async def _publish(
        self, job: Job, payload: ArtifactPayload, artifact: ArtifactConfig, cwd: Path, sink: Sink
    ) -> dict[str, Any]:
        output = _output(cwd, artifact)
        repository = oci_repository(job.repository, payload.project, payload.artifact)
        name = f"artifact {payload.artifact}"
        published: list[Publication] = []
        digest: str | None = None
        url: str | None = None
        if artifact.type == "container":
            digest = await self._retried(name, lambda: self.registry.push_layout(repository, output))
            published.append(Publication(publisher="oci", type="oci", location=self._ref(repository, digest)))
        else:
            data = await asyncio.to_thread(_read_file, output)
            if "oci" in artifact.publishers:
                layer = Layer(FILE_MEDIA_TYPE[artifact.type], data, {"org.opencontainers.image.title": output.name})
                digest = await self._retried(
                    name,
                    lambda: self.registry.push_artifact(
                        repository, artifact_type=FILE_MEDIA_TYPE[artifact.type], layers=[layer], annotations={}
                    ),
                )
                published.append(Publication(publisher="oci", type="oci", location=self._ref(repository, digest)))
            if "s3" in artifact.publishers:
                key = f"artifacts/{repository}/{job.commit_sha}/{output.name}"
                await self._retried(name, lambda: self.objects.put(key, data))
                url = f"s3://{self.bucket}/{key}"
                published.append(Publication(publisher="s3", type="s3", location=url))
                digest = digest or sha256_digest(data)
        if digest is None:
            raise PermanentError(f"{name} has no publisher that stores it (publishers: {artifact.publishers})")
        await sink(f"forge: published {name}: {', '.join(p.location for p in published)}\n".encode())
        fields = artifact_fields(self._ref(repository, digest).rpartition("@")[0], digest, job.commit_sha, url=url)
        if url is not None and "oci" not in artifact.publishers:
            fields["ref"] = url  # an s3-only file is nowhere in the registry: its reference is the object
        metadata = ArtifactMetadata(
            repository=job.repository,
            project=payload.project,
            artifact=payload.artifact,
            type=artifact.type,
            commit_sha=job.commit_sha,
            ref=fields["ref"],
            digest=digest,
            publishers=published,
        )
        tracking = await self._retried(
            f"the tracking image of {name}",
            lambda: self.registry.push_artifact(
                repository,
                artifact_type=TRACKING_ARTIFACT_TYPE,
                layers=[Layer(ARTIFACT_METADATA, metadata.to_bytes())],
                annotations={"org.opencontainers.image.revision": job.commit_sha},
                tags=[tracking_tag(job.commit_sha)],
            ),
        )
        tracking_ref = self._ref(repository, tracking)
        await sink(f"forge: tracking image {tracking_ref.rpartition('@')[0]}:{tracking_tag(job.commit_sha)}\n".encode())
        return {
            **fields,
            "name": payload.artifact,
            "type": artifact.type,
            "tracking_ref": tracking_ref,
            "tracking_digest": tracking,
            "published": [p.model_dump(mode="json") for p in published],
        }

    def _ref(self, repository: str, digest: str) -> str:
        return self.registry.reference(repository, digest)

    async def _retried(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retried(what, call, self.retry_for)


async def retried(what: str, call: Callable[[], Awaitable[T]], retry_for: float) -> T:
    """``await call()``; a transient failure (registry or object store down) is retried for ``retry_for``
    seconds, then becomes a permanent one naming ``what``, so the step fails with its cause."""
    try:
        async for attempt in stamina.retry_context(on=transient, attempts=None, timeout=retry_for):
            with attempt:
                return await call()
    except TransientError as exc:
        raise PermanentError(f"publishing {what} failed: {exc.message}", code="publish_failed") from exc
    raise AssertionError("stamina ended without an attempt")


def _output(cwd: Path, artifact: ArtifactConfig) -> Path:
    output = (cwd / artifact.producer.output).resolve()
    if not output.is_relative_to(cwd.resolve()):
        raise PermanentError(f"producer output {artifact.producer.output!r} leaves the project directory")
    want_dir = artifact.type == "container"
    if not output.exists():
        kind = "an OCI image-layout directory" if want_dir else "a file"
        raise PermanentError(f"the producer left no output: {artifact.producer.output} should be {kind}")
    if want_dir != output.is_dir():
        kind = "an OCI image-layout directory" if want_dir else "a regular file"
        raise PermanentError(f"producer output {artifact.producer.output} is not {kind}")
    if want_dir:  # the worker reads what the (sandboxed) step left: never through a link it planted
        for top, dirs, files in os.walk(output):
            for name in (*dirs, *files):
                entry = Path(top) / name
                if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                    where = entry.relative_to(output)
                    raise PermanentError(
                        f"producer output {artifact.producer.output}: {where} is a link or a special file; "
                        "only directories and regular files are published"
                    )
    return output


def _read_file(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise LimitExceededError(f"{path.name} is {size} bytes; the limit is {MAX_FILE_BYTES}")
    return path.read_bytes()

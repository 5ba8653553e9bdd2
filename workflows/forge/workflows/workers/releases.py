"""Release jobs: render a project's ``deploy.resources`` with its artifacts, pack them and push the
Release OCI artifact (DESIGN §8; issue 8).

The artifacts' fields come from the results of the run's artifact jobs (``pipeline.results.<key>``,
the canonical result channel), so nothing is rebuilt. The manifest: artifactType
``application/vnd.forge.release.v1``, the empty config, a metadata layer and a resources layer
(deterministic bytes: a retried release pushes the identical digest), tagged ``sha-<commit>`` in
``<registry>/<owner>/<repo>/<project>``. The release *number* does not exist yet: the controller
allocates it when it records the release from this step's ``success`` event
(:class:`~forge.domain.events.PublishedRelease`), then pushes the ``<number>`` tag.

Like a CI step, the job writes a log (``release/<project>/release``) and reports ``success`` or
``failed`` with a one-line cause (a failed or missing artifact, a resource without kind, an
unknown field, an oversized release, a registry that refuses the push); nothing is recorded for a
release whose push did not complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forge.domain.config import RELEASE_PHASE
from forge.domain.events import PublishedArtifact, PublishedRelease
from forge.domain.messages import Job, ReleasePayload
from forge.errors import ForgeError, InvalidInputError, NotFoundError, PermanentError
from forge.jobs.dispatch import stored_result
from forge.jobs.events import StepEventPublisher
from forge.logs import log_key
from forge.ports import ArtifactRegistry, GitMirrors, MessageBus, ObjectStore
from forge.ports.registry import Layer, sha256_digest
from forge.releases import (
    ARTIFACT_FIELDS,
    ReleaseArtifact,
    ReleaseMetadata,
    pack_resources,
    render_resources,
    summarize_resources,
    tracking_tag,
    unvalidated_resources,
)
from forge.releases.media_types import LAYER_TYPE_ANNOTATION, RELEASE_ARTIFACT_TYPE, RELEASE_METADATA, RESOURCES
from forge.releases.metadata import MAX_METADATA_BYTES
from forge.releases.naming import oci_repository
from forge.workflows.workers.artifacts import project_config, retried
from forge.workflows.workers.step_report import StepReport

__all__ = ["ReleaseHandler"]


@dataclass
class ReleaseHandler:
    mirrors: GitMirrors
    objects: ObjectStore
    bus: MessageBus
    registry: ArtifactRegistry
    events: StepEventPublisher | None = None
    retry_for: float = 60.0

    async def __call__(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        if not isinstance(payload, ReleasePayload):
            raise InvalidInputError(f"job {job.key} carries a {payload.type} payload, not release")
        key = log_key(job.run_id, RELEASE_PHASE, payload.project, "release")
        report = StepReport(self.objects, self.events, job, payload.step_execution_id, payload.attempt + 1, key)
        await report.write(f"release of {payload.project} at {job.repository}@{job.commit_sha[:12]}")
        try:
            release = await self._pushed(job, payload, report) or await self._release(job, payload, report)
        except ForgeError as exc:
            await report.failed(exc.message)
            raise PermanentError(
                f"release of {payload.project}: {exc.message}", code="release_failed", details={"logs_key": key}
            ) from exc
        await report.write(f"Release OCI {release.oci_ref} (tag {tracking_tag(job.commit_sha)})")
        await report.succeeded(release=release)
        return {"logs_key": key, "exit_code": 0, **release.model_dump(mode="json")}

    async def _pushed(self, job: Job, payload: ReleasePayload, report: StepReport) -> PublishedRelease | None:
        """The release of this commit when it is already in the registry (an earlier run of the commit, or a
        retry): a release per commit, so it is reused, never pushed again with other content."""
        repository = oci_repository(job.repository, payload.project)
        try:
            manifest = await retried(
                f"the release of {payload.project}",
                lambda: self.registry.manifest(repository, tracking_tag(job.commit_sha)),
                self.retry_for,
            )
        except NotFoundError:
            return None
        if manifest.artifact_type != RELEASE_ARTIFACT_TYPE:
            raise PermanentError(
                f"{repository}:{tracking_tag(job.commit_sha)} is a {manifest.artifact_type or 'plain image'}, "
                "not a Release OCI artifact"
            )
        layer = next((la for la in manifest.content.get("layers", []) if la.get("mediaType") == RELEASE_METADATA), None)
        if layer is None:
            raise PermanentError(f"the release at {repository}@{manifest.digest} has no metadata layer")
        metadata = ReleaseMetadata.from_bytes(
            await self.registry.blob(repository, layer["digest"], max_bytes=MAX_METADATA_BYTES)
        )
        await report.write(f"this commit's release is already in the registry ({manifest.digest}): reused")
        artifacts = [
            PublishedArtifact(name=a.name, type=a.type, tracking_ref=a.tracking_ref, tracking_digest=a.tracking_digest)
            for a in metadata.artifacts
        ]
        return self._published(job, payload, repository, manifest.digest, artifacts)

    async def _release(self, job: Job, payload: ReleasePayload, report: StepReport) -> PublishedRelease:
        config = await project_config(self.mirrors, job, payload.clone_url, payload.config_blob)
        artifacts = {name: await self._artifact(name, key) for name, key in sorted(payload.artifacts.items())}
        values = {name: {f: str(data[f]) for f in ARTIFACT_FIELDS} for name, data in artifacts.items()}
        resources = config.deploy.resources if config.deploy is not None else []
        objects = render_resources(resources, values)
        for unvalidated in unvalidated_resources(objects):
            await report.write(f"{unvalidated}: no schema bundled; accepted unvalidated")
        packed = pack_resources(objects)
        metadata = ReleaseMetadata(
            repository=job.repository,
            project=payload.project,
            commit_sha=job.commit_sha,
            trigger=payload.trigger,
            branch=payload.branch,
            tag=payload.tag,
            created_by=payload.requested_by,
            artifacts=[
                ReleaseArtifact(
                    name=name,
                    type=data["type"],
                    ref=data["ref"],
                    digest=data["digest"],
                    tracking_ref=data["tracking_ref"],
                    tracking_digest=data["tracking_digest"],
                )
                for name, data in artifacts.items()
            ],
            resources=summarize_resources(objects),
            resources_digest=sha256_digest(packed),
        )
        await report.write(f"rendered {len(objects)} resource(s), {len(packed)} bytes packed")
        repository = oci_repository(job.repository, payload.project)
        layers = [
            Layer(RELEASE_METADATA, metadata.to_bytes(), {LAYER_TYPE_ANNOTATION: "metadata"}),
            Layer(RESOURCES, packed, {LAYER_TYPE_ANNOTATION: "resources"}),
        ]
        annotations = {
            "org.opencontainers.image.revision": job.commit_sha,
            "org.opencontainers.image.source": job.repository,
        }
        digest = await retried(
            f"the release of {payload.project}",
            lambda: self.registry.push_artifact(
                repository,
                artifact_type=RELEASE_ARTIFACT_TYPE,
                layers=layers,
                annotations=annotations,
                tags=[tracking_tag(job.commit_sha)],
            ),
            self.retry_for,
        )
        published = [
            PublishedArtifact(
                name=name,
                type=data["type"],
                tracking_ref=data["tracking_ref"],
                tracking_digest=data["tracking_digest"],
                published=list(data.get("published", [])),
            )
            for name, data in artifacts.items()
        ]
        return self._published(job, payload, repository, digest, published)

    def _published(
        self,
        job: Job,
        payload: ReleasePayload,
        repository: str,
        digest: str,
        artifacts: list[PublishedArtifact],
    ) -> PublishedRelease:
        """What the release step's success event carries for the controller to record."""
        return PublishedRelease(
            repository=job.repository,
            project=payload.project,
            commit_sha=job.commit_sha,
            oci_ref=self.registry.reference(repository, digest),
            oci_digest=digest,
            trigger=payload.trigger,
            branch=payload.branch,
            tag=payload.tag,
            created_by=payload.requested_by,
            artifacts=artifacts,
        )

    async def _artifact(self, name: str, key: str) -> dict[str, Any]:
        """The published fields of one artifact, from its job's stored result."""
        result = await stored_result(self.bus, key)
        if result is None:
            raise PermanentError(f"artifact {name} has no result (job {key} did not run)")
        if not result.success or result.data is None:
            cause = result.error.message if result.error is not None else "no data"
            raise PermanentError(f"artifact {name} was not published: {cause}")
        missing = [f for f in (*ARTIFACT_FIELDS, "type", "tracking_ref", "tracking_digest") if f not in result.data]
        if missing:
            raise PermanentError(f"artifact {name}'s result lacks {', '.join(missing)}")
        return result.data

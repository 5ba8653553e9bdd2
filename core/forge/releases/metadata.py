"""The JSON layers of a Release OCI and of a tracking image (DESIGN §8), byte-stable.

A retried release must push the same digest, so :meth:`to_bytes` is canonical: sorted keys,
compact separators, UTF-8, lists sorted by their natural key, and no field that changes between
attempts (no build time, no run id, no release number: the controller allocates the number
after the push, and it lives in the registry as a tag and in PostgreSQL). ``source.committed_at``
comes from the commit, so it is stable. ``from_bytes`` validates what a registry returns and
refuses anything else, unknown keys and later schema versions included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from forge.errors import InvalidInputError

__all__ = [
    "ArtifactMetadata",
    "Publication",
    "ReleaseArtifact",
    "ReleaseMetadata",
    "ResourceEntry",
    "SourceInfo",
    "summarize_resources",
]

MAX_METADATA_BYTES = 1_048_576
CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
ArtifactType = Literal["container", "binary", "archive"]


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same model always gives the same bytes."""
        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = MAX_METADATA_BYTES) -> Self:
        """Parse and validate a layer; InvalidInputError names the first problem on one line."""
        what = cls.__name__
        if len(data) > max_bytes:
            raise InvalidInputError(f"{what}: {len(data)} bytes, over the limit of {max_bytes}")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "(document)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise InvalidInputError(f"{what}: {field}: {first['msg']}{more}") from None


class SourceInfo(_Layer):
    """The commit a release was built from, as git records it."""

    author: str
    message: str
    committed_at: datetime


class ReleaseArtifact(_Layer):
    name: str
    type: ArtifactType
    ref: str = Field(description="Where the artifact is, by digest (an image reference for OCI)")
    digest: Digest
    tracking_ref: str = Field(description="The tracking image <registry>/<owner>/<repo>/<project>/<artifact>@sha256:…")
    tracking_digest: Digest


class ResourceEntry(_Layer):
    """One object of the resources layer, by identity."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    namespace: str | None = None
    name: str


class ReleaseMetadata(_Layer):
    """Layer ``application/vnd.forge.release.metadata.v1+json``."""

    schema_version: Literal[1] = 1
    repository: str
    project: str
    commit_sha: CommitSha
    trigger: str = Field(description="What made the release: branch, tag or manual")
    branch: str | None = None
    tag: str | None = None
    created_by: str
    source: SourceInfo | None = None
    artifacts: list[ReleaseArtifact] = Field(default_factory=list)
    resources: list[ResourceEntry] = Field(default_factory=list)
    resources_digest: Digest = Field(description="Digest of the resources layer")

    @field_validator("artifacts")
    @classmethod
    def _artifacts_by_name(cls, value: list[ReleaseArtifact]) -> list[ReleaseArtifact]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError("artifact names must be unique")
        return sorted(value, key=lambda a: a.name)

    @field_validator("resources")
    @classmethod
    def _resources_sorted(cls, value: list[ResourceEntry]) -> list[ResourceEntry]:
        return sorted(value, key=lambda r: (r.kind, r.name, r.namespace or "", r.api_version))


class Publication(_Layer):
    """Where one publisher put the artifact."""

    publisher: str
    type: Literal["oci", "s3"]
    location: str = Field(description="Image reference by digest (oci) or object URL (s3)")


class ArtifactMetadata(_Layer):
    """Layer ``application/vnd.forge.artifact.metadata.v1+json`` of a tracking image."""

    schema_version: Literal[1] = 1
    repository: str
    project: str
    artifact: str
    type: ArtifactType
    commit_sha: CommitSha
    ref: str
    digest: Digest
    publishers: list[Publication] = Field(default_factory=list)

    @field_validator("publishers")
    @classmethod
    def _publishers_sorted(cls, value: list[Publication]) -> list[Publication]:
        return sorted(value, key=lambda p: (p.publisher, p.location))


def summarize_resources(objects: Sequence[Mapping[str, Any]]) -> list[ResourceEntry]:
    """The ``resources`` list of :class:`ReleaseMetadata` for rendered objects."""
    return [
        ResourceEntry(
            api_version=o["apiVersion"],
            kind=o["kind"],
            namespace=o["metadata"].get("namespace") or None,
            name=o["metadata"]["name"],
        )
        for o in objects
    ]

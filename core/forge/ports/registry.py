"""ArtifactRegistry: OCI distribution for artifacts, tracking images and Release OCI artifacts (DESIGN §8).

``repository`` is always the path inside the registry (``owner/repo/project/artifact``), never the
host: one adapter talks to one registry, and only :meth:`ArtifactRegistry.reference` names the host.

Error contract (every adapter, ``forge.errors``):

- unknown repository, manifest or blob → ``NotFoundError``;
- connection refused, timeouts, 5xx, 429 → ``ServiceUnavailableError`` naming the registry's host;
- 401/403 → ``PermanentError`` code ``registry_denied``;
- other 4xx → ``PermanentError`` carrying the registry's own error code and message;
- bytes that do not match their digest → ``PermanentError`` code ``digest_mismatch``;
- an invalid image layout → ``InvalidInputError`` naming the file and the reason;
- a blob larger than asked for → ``LimitExceededError`` before it is read whole.

Messages never carry a password.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from forge.errors import InvalidInputError, PermanentError

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "EMPTY_CONFIG",
    "EMPTY_CONFIG_MEDIA_TYPE",
    "IMAGE_INDEX",
    "IMAGE_MANIFEST",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_BYTES",
    "REF_NAME",
    "ArtifactReader",
    "ArtifactRegistry",
    "ImageLayout",
    "Layer",
    "LayoutBlob",
    "Manifest",
    "artifact_manifest",
    "check_digest",
    "check_repository",
    "check_tag",
    "descriptor",
    "digest_mismatch",
    "is_digest",
    "parse_manifest",
    "read_layout",
    "sha256_digest",
]


@dataclass(frozen=True, slots=True)
class Layer:
    media_type: str
    data: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str  # sha256:<hex> of the exact manifest bytes
    media_type: str
    artifact_type: str | None
    content: Mapping[str, Any]  # the parsed manifest
    size: int


class ArtifactReader(Protocol):
    """The read half of :class:`ArtifactRegistry`: all a process that only pulls needs (forge-cmp).

    Every :class:`ArtifactRegistry` is an ``ArtifactReader``; a read-only adapter
    (``forge.adapters.http_registry.HttpRegistryReader``) implements only this half and passes the
    read tests of the same compliance suite.
    """

    def reference(self, repository: str, digest: str) -> str:
        """The user-facing reference ``<host[:port]>/<repository>@<digest>``."""

    async def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest of a tag or digest; bytes fetched by digest are verified against it."""

    async def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        """A blob, verified against ``digest``; larger than ``max_bytes`` → ``LimitExceededError``."""

    async def tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted; ``NotFoundError`` for an unknown repository."""


class ArtifactRegistry(ArtifactReader, Protocol):
    async def push_artifact(
        self,
        repository: str,
        *,
        artifact_type: str,
        layers: Sequence[Layer],
        annotations: Mapping[str, str],
        tags: Sequence[str] = (),
    ) -> str:
        """Push an OCI 1.1 artifact (empty config, ``layers`` in order); returns the manifest digest.

        The manifest bytes are :func:`artifact_manifest` of the inputs, so a retried
        push gives the same digest and changes nothing. Pushed by digest, then tagged.
        """

    async def push_layout(
        self, repository: str, layout: Path, *, tags: Sequence[str] = (), ref_name: str | None = None
    ) -> str:
        """Push the one image manifest of an OCI image-layout directory; returns its (unchanged) digest.

        The layout is checked first by :func:`read_layout`: ``oci-layout`` with version
        1.0.0, ``index.json`` naming exactly one image manifest (or exactly one whose
        ``org.opencontainers.image.ref.name`` is ``ref_name``), every blob under ``blobs/sha256``
        present with matching digest and size.
        """

    async def tag(self, repository: str, digest: str, tag: str) -> None:
        """Point ``tag`` at the existing manifest ``digest`` (idempotent)."""


# The rules below are part of the contract: every adapter builds and checks manifests with them, so
# the fake and the real registry agree on names, digests and bytes.

IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (IMAGE_MANIFEST, IMAGE_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what OCI registries must accept at least

_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def check_repository(repository: str) -> str:
    """``repository`` when it is an OCI repository name (a path, never a host), else ``InvalidInputError``."""
    if len(repository) > 255 or not _REPOSITORY.fullmatch(repository):
        raise InvalidInputError(f"repository {repository!r}: not an OCI repository name (lowercase path, no host)")
    return repository


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidInputError(f"tag {tag!r}: not an OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")
    return tag


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInputError(f"digest {digest!r}: not a sha256 digest (sha256:<64 lowercase hex>)")
    return digest


def is_digest(reference: str) -> bool:
    return reference.startswith("sha256:")


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def digest_mismatch(what: str, expected: str, actual: str) -> PermanentError:
    return PermanentError(
        f"{what}: content has digest {actual}, expected {expected}",
        code="digest_mismatch",
        details={"expected": expected, "actual": actual},
    )


def descriptor(media_type: str, data: bytes, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    if annotations:
        entry["annotations"] = dict(annotations)
    return entry


def artifact_manifest(artifact_type: str, layers: Sequence[Layer], annotations: Mapping[str, str]) -> bytes:
    """The OCI 1.1 artifact manifest as sorted-key compact JSON: same inputs, same bytes, same digest."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(EMPTY_CONFIG_MEDIA_TYPE, EMPTY_CONFIG),
        "layers": [descriptor(layer.media_type, layer.data, layer.annotations) for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_manifest(data: bytes, digest: str, *, where: str, media_type: str | None = None) -> Manifest:
    """A :class:`Manifest` of ``data``; a manifest that is not a JSON object is a permanent error."""
    try:
        content = json.loads(data)
    except ValueError as exc:
        raise PermanentError(f"{where}: manifest is not JSON ({exc})", code="manifest_invalid") from exc
    if not isinstance(content, dict):
        raise PermanentError(f"{where}: manifest is not a JSON object", code="manifest_invalid")
    artifact_type = content.get("artifactType")
    return Manifest(
        digest=digest,
        media_type=str(content.get("mediaType") or media_type or IMAGE_MANIFEST),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        content=content,
        size=len(data),
    )


@dataclass(frozen=True, slots=True)
class LayoutBlob:
    digest: str
    size: int
    media_type: str
    path: Path


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """The one image manifest of a checked image-layout directory, and the blobs it names (config first)."""

    manifest: bytes
    digest: str
    media_type: str
    blobs: tuple[LayoutBlob, ...]


def read_layout(layout: Path, ref_name: str | None = None) -> ImageLayout:
    """Check an OCI image-layout directory and return its one image manifest; ``InvalidInputError`` names the file.

    Blobs must be regular files (a symbolic link could push a file from outside the layout) whose
    size and sha256 match their descriptor. Only image manifests are pushed: an index inside the
    layout's index (multi-platform builds) is refused, as is any digest algorithm but sha256.
    """
    marker = _layout_json(layout / "oci-layout")
    if marker.get("imageLayoutVersion") != "1.0.0":
        raise InvalidInputError(f"{layout / 'oci-layout'}: imageLayoutVersion is not 1.0.0")
    index_path = layout / "index.json"
    entries = _layout_json(index_path).get("manifests")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InvalidInputError(f"{index_path}: 'manifests' is not a list of descriptors")
    if ref_name is not None:
        entries = [entry for entry in entries if (entry.get("annotations") or {}).get(REF_NAME) == ref_name]
    named = f" with {REF_NAME} {ref_name!r}" if ref_name is not None else ""
    if len(entries) != 1:
        raise InvalidInputError(f"{index_path}: names {len(entries)} manifests{named}, expected exactly one")
    entry = entries[0]
    media_type = entry.get("mediaType")
    if media_type not in (IMAGE_MANIFEST, DOCKER_MANIFEST):
        raise InvalidInputError(f"{index_path}: the manifest{named} is {media_type!r}, not an image manifest")
    manifest_blob = _layout_blob(layout, entry, index_path, limit=MAX_MANIFEST_BYTES)
    data = manifest_blob.path.read_bytes()
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise InvalidInputError(f"{manifest_blob.path}: the image manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{manifest_blob.path}: the image manifest is not a JSON object")
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise InvalidInputError(f"{manifest_blob.path}: the image manifest needs a config and a list of layers")
    blobs = tuple(_layout_blob(layout, item, manifest_blob.path) for item in [config, *layers])
    return ImageLayout(manifest=data, digest=manifest_blob.digest, media_type=str(media_type), blobs=blobs)


def _layout_json(path: Path) -> dict[str, Any]:
    if path.is_symlink() or not path.is_file():
        raise InvalidInputError(f"{path}: missing (not an OCI image layout)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InvalidInputError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        value = json.loads(path.read_bytes())
    except ValueError as exc:
        raise InvalidInputError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise InvalidInputError(f"{path}: not a JSON object")
    return value


def _layout_blob(layout: Path, entry: Mapping[str, Any], named_in: Path, *, limit: int | None = None) -> LayoutBlob:
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInputError(f"{named_in}: descriptor digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"{named_in}: descriptor of {digest} has no valid size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidInputError(f"{named_in}: descriptor of {digest} has no media type")
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    if path.is_symlink() or not path.is_file():
        raise InvalidInputError(f"{path}: blob {digest} named in {named_in.name} is missing")
    actual_size = path.stat().st_size
    if actual_size != size:
        raise InvalidInputError(f"{path}: {actual_size} bytes, but {named_in.name} says {size}")
    if limit is not None and size > limit:
        raise InvalidInputError(f"{path}: larger than {limit} bytes")
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            hasher.update(chunk)
    actual = f"sha256:{hasher.hexdigest()}"
    if actual != digest:
        raise InvalidInputError(f"{path}: content has digest {actual}, but {named_in.name} says {digest}")
    return LayoutBlob(digest=digest, size=size, media_type=media_type, path=path)

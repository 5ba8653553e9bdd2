"""Fetch a Release OCI by the pointer's digest, verify it, and keep it in a digest-addressed cache.

Checks, on the registry's answer and again on every cache read (same code, :func:`_verify`):

1. the manifest's sha256 is the pointer's ``spec.digest`` (the port verifies bytes fetched by
   digest; we compare its digest with ours too);
2. ``artifactType`` is ``application/vnd.forge.release.v1``;
3. exactly one metadata layer and one resources layer, found by media type; each blob's sha256
   is its descriptor's digest (the port verifies on fetch, the cache on read);
4. the metadata names the pointer's repository, project and commit, and its ``resources_digest``
   is the resources layer's digest.

The cache (``FORGE_CMP_CACHE``, default ``$XDG_CACHE_HOME/forge/cmp`` or ``~/.cache/forge/cmp``)
holds ``blobs/sha256/<hex>`` (the metadata and resources blobs, verified by sha256 on read) and
``releases/sha256/<manifest hex>.json`` (the manifest's parsed content, written only after every
check passed, re-checked on read). Writes go to a temporary file renamed into place, so a
concurrent ``generate`` sees a whole file or none; a cache entry that fails a check is deleted and
fetched again; a cache directory that cannot be written is skipped (it is only an optimisation).

On a cache miss the release is read through the registry port's read half
(``ArtifactReader``): ``__main__`` gives ``HttpRegistryReader`` (``http.client``, no oras, requests
or asyncio). Its coroutines complete without an event loop, so :func:`_complete` drives them
without importing asyncio. The metadata layer is checked field by field (check 4: the fields this
plugin relies on), not with ``forge.releases.ReleaseMetadata``: pydantic costs a cold render ~17 ms,
and the layer is already bound to the manifest digest the GitOps commit names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from forge.cmp.pointer import ReleasePointer
from forge.errors import InvalidInputError, PermanentError

if TYPE_CHECKING:
    from forge.ports.registry import ArtifactReader

__all__ = [
    "METADATA_MEDIA_TYPE",
    "RELEASE_ARTIFACT_TYPE",
    "RESOURCES_MEDIA_TYPE",
    "ReleaseBlobs",
    "ReleaseCache",
    "default_cache_dir",
    "load_release",
    "write_atomic",
]

# The contract strings of forge.releases.media_types, repeated (and tested equal) so that the warm
# path does not import forge.releases, whose package imports pydantic.
RELEASE_ARTIFACT_TYPE = "application/vnd.forge.release.v1"
METADATA_MEDIA_TYPE = "application/vnd.forge.release.metadata.v1+json"
RESOURCES_MEDIA_TYPE = "application/vnd.forge.resources.v1.tar+gzip"
MAX_LAYER_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 1_048_576
T = TypeVar("T")


class ReleaseBlobs(NamedTuple):
    """A verified release: its metadata (parsed JSON) and its resources layer (bytes)."""

    metadata: Mapping[str, Any]
    resources: bytes


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``FORGE_CMP_CACHE``, else ``$XDG_CACHE_HOME/forge/cmp``, else ``~/.cache/forge/cmp``."""
    if environ.get("FORGE_CMP_CACHE"):
        return Path(environ["FORGE_CMP_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forge" / "cmp"


class ReleaseCache:
    """Digest-addressed files under ``root``; every read is verified, every write atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, digest: str) -> bytes | None:
        path = self._blob_path(digest)
        data = _read(path)
        if data is not None and _sha256(data) != digest:
            path.unlink(missing_ok=True)
            return None
        return data

    def put_blob(self, digest: str, data: bytes) -> None:
        if _sha256(data) == digest:
            write_atomic(self._blob_path(digest), data)

    def manifest(self, digest: str) -> Mapping[str, Any] | None:
        path = self._manifest_path(digest)
        data = _read(path)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if (
            not isinstance(record, dict)
            or record.get("digest") != digest
            or not isinstance(record.get("content"), dict)
        ):
            path.unlink(missing_ok=True)
            return None
        content: dict[str, Any] = record["content"]
        return content

    def put_manifest(self, digest: str, content: Mapping[str, Any]) -> None:
        record = {"digest": digest, "content": content}
        write_atomic(self._manifest_path(digest), json.dumps(record, sort_keys=True, separators=(",", ":")).encode())

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def _manifest_path(self, digest: str) -> Path:
        return self.root / "releases" / "sha256" / f"{digest.removeprefix('sha256:')}.json"


def load_release(
    pointer: ReleasePointer, cache: ReleaseCache | None, open_registry: Callable[[], ArtifactReader]
) -> ReleaseBlobs:
    """The release the pointer names, from the cache when it is there and whole, else from the registry."""
    if cache is not None:
        cached = _from_cache(pointer, cache)
        if cached is not None:
            return cached
    content, blobs = _pull(pointer, open_registry())
    metadata_digest, resources_digest = _layers(content)
    release = _verify(pointer, content, blobs[metadata_digest], blobs[resources_digest])
    if cache is not None:  # only a release that passed every check is cached
        for digest, data in blobs.items():
            cache.put_blob(digest, data)
        cache.put_manifest(pointer.digest, content)  # last: a manifest record means its blobs were written
    return release


def _from_cache(pointer: ReleasePointer, cache: ReleaseCache) -> ReleaseBlobs | None:
    content = cache.manifest(pointer.digest)
    if content is None:
        return None
    try:
        metadata_digest, resources_digest = _layers(content)
    except PermanentError:
        return None
    metadata, resources = cache.blob(metadata_digest), cache.blob(resources_digest)
    if metadata is None or resources is None:
        return None
    return _verify(pointer, content, metadata, resources)


def _pull(pointer: ReleasePointer, registry: ArtifactReader) -> tuple[Mapping[str, Any], dict[str, bytes]]:
    from forge.releases.naming import oci_repository

    repository = oci_repository(pointer.repository, pointer.project)
    manifest = _complete(registry.manifest(repository, pointer.digest))
    if manifest.digest != pointer.digest:
        raise PermanentError(
            f"the registry returned manifest {manifest.digest} for {repository}@{pointer.digest}",
            code="digest_mismatch",
        )
    content = dict(manifest.content)
    metadata_digest, resources_digest = _layers(content)
    blobs = {
        metadata_digest: _complete(registry.blob(repository, metadata_digest, max_bytes=MAX_METADATA_BYTES)),
        resources_digest: _complete(registry.blob(repository, resources_digest, max_bytes=MAX_LAYER_BYTES)),
    }
    for digest, data in blobs.items():
        if _sha256(data) != digest:
            raise PermanentError(f"blob {digest} of {repository}: content has digest {_sha256(data)}")
    return content, blobs


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a registry coroutine, run without an event loop (a reader's calls never suspend then)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("the registry reader suspended without an event loop; it cannot serve forge-cmp")


def _layers(content: Mapping[str, Any]) -> tuple[str, str]:
    """``(metadata digest, resources digest)`` of a Release OCI manifest, after checks 2 and 3."""
    artifact_type = content.get("artifactType")
    if artifact_type != RELEASE_ARTIFACT_TYPE:
        raise PermanentError(
            f"not a Release OCI artifact: artifactType is {artifact_type!r}, expected {RELEASE_ARTIFACT_TYPE}",
            code="wrong_artifact_type",
        )
    layers = content.get("layers")
    if not isinstance(layers, list):
        raise PermanentError("the release manifest has no layers list", code="manifest_invalid")
    found: dict[str, str] = {}
    for media_type in (METADATA_MEDIA_TYPE, RESOURCES_MEDIA_TYPE):
        matches = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == media_type]
        if len(matches) != 1:
            raise PermanentError(
                f"the release manifest has {len(matches)} layers of media type {media_type}, expected exactly one",
                code="missing_layer" if not matches else "manifest_invalid",
            )
        digest = matches[0].get("digest")
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            raise PermanentError(f"the {media_type} layer has no sha256 digest", code="manifest_invalid")
        found[media_type] = digest
    return found[METADATA_MEDIA_TYPE], found[RESOURCES_MEDIA_TYPE]


def _verify(pointer: ReleasePointer, content: Mapping[str, Any], metadata: bytes, resources: bytes) -> ReleaseBlobs:
    """Check 4 (checks 1-3 were made by :func:`_layers` and the blob digests)."""
    metadata_digest, resources_digest = _layers(content)
    if _sha256(metadata) != metadata_digest or _sha256(resources) != resources_digest:
        raise PermanentError("a release layer does not match its digest", code="digest_mismatch")
    try:
        parsed = json.loads(metadata)
    except ValueError as exc:
        raise InvalidInputError(f"release metadata layer: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError("release metadata layer: not a JSON object")
    expected = {
        "repository": pointer.repository,
        "project": pointer.project,
        "commit_sha": pointer.release,
        "resources_digest": resources_digest,
    }
    for field, want in expected.items():
        if parsed.get(field) != want:
            raise PermanentError(
                f"release metadata: {field} is {parsed.get(field)!r}, but the pointer (or manifest) says {want!r}",
                code="release_mismatch",
            )
    return ReleaseBlobs(metadata=parsed, resources=resources)


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all: written to a temporary file of its own (pid and a random
    suffix, created exclusively) in the same directory, then renamed over ``path``. Two renders that write
    the same entry at once each rename a whole file; the last rename wins, and both hold the same bytes
    (every entry is keyed by its content). A failure leaves no temporary file; it is skipped (the cache is
    only an optimisation). No ``tempfile``: its import costs a render more than this does."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}-{os.urandom(6).hex()}")
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            temporary.replace(path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

"""An in-memory OCI registry honouring the ArtifactRegistry contract, for tests and a one-process platform.

It keeps what a distribution registry keeps per repository: blobs, manifests by digest and tags, and
refuses a manifest whose blobs were not pushed first (as the registry does with MANIFEST_BLOB_UNKNOWN).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from forge.errors import LimitExceededError, NotFoundError, PermanentError
from forge.ports.registry import (
    EMPTY_CONFIG,
    Layer,
    Manifest,
    artifact_manifest,
    check_digest,
    check_repository,
    check_tag,
    is_digest,
    parse_manifest,
    read_layout,
    sha256_digest,
)

__all__ = ["MemoryRegistry"]


@dataclass
class _Repository:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class MemoryRegistry:
    def __init__(self, host: str = "registry.invalid") -> None:
        self.host = host
        self._repositories: dict[str, _Repository] = {}

    def reference(self, repository: str, digest: str) -> str:
        return f"{self.host}/{check_repository(repository)}@{check_digest(digest)}"

    async def push_artifact(
        self,
        repository: str,
        *,
        artifact_type: str,
        layers: Sequence[Layer],
        annotations: Mapping[str, str],
        tags: Sequence[str] = (),
    ) -> str:
        check_repository(repository)
        for tag in tags:
            check_tag(tag)
        manifest = artifact_manifest(artifact_type, layers, annotations)
        blobs = [EMPTY_CONFIG, *(layer.data for layer in layers)]
        await asyncio.sleep(0)  # a real push yields to the loop; so does the fake
        return self._store(repository, manifest, blobs, tags)

    async def push_layout(
        self, repository: str, layout: Path, *, tags: Sequence[str] = (), ref_name: str | None = None
    ) -> str:
        check_repository(repository)
        for tag in tags:
            check_tag(tag)
        image = await asyncio.to_thread(read_layout, layout, ref_name)
        blobs = [blob.path.read_bytes() for blob in image.blobs]
        return self._store(repository, image.manifest, blobs, tags)

    async def manifest(self, repository: str, reference: str) -> Manifest:
        reference = check_digest(reference) if is_digest(reference) else check_tag(reference)
        repo = self._repository(repository)
        digest = reference if is_digest(reference) else repo.tags.get(reference)
        if digest is None or digest not in repo.manifests:
            raise NotFoundError(f"manifest {reference} not found in {self.host}/{repository}")
        return parse_manifest(repo.manifests[digest], digest, where=f"{self.host}/{repository}@{digest}")

    async def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        check_digest(digest)
        data = self._repository(repository).blobs.get(digest)
        if data is None:
            raise NotFoundError(f"blob {digest} not found in {self.host}/{repository}")
        if len(data) > max_bytes:
            raise LimitExceededError(f"blob {digest} in {self.host}/{repository} has {len(data)} bytes (> {max_bytes})")
        return data

    async def tags(self, repository: str) -> list[str]:
        return sorted(self._repository(repository).tags)

    async def tag(self, repository: str, digest: str, tag: str) -> None:
        check_digest(digest)
        check_tag(tag)
        repo = self._repository(repository)
        if digest not in repo.manifests:
            raise NotFoundError(f"manifest {digest} not found in {self.host}/{repository}")
        repo.tags[tag] = digest

    def _repository(self, repository: str) -> _Repository:
        repo = self._repositories.get(check_repository(repository))
        if repo is None:
            raise NotFoundError(f"repository {repository} not found in {self.host}")
        return repo

    def _store(self, repository: str, manifest: bytes, blobs: Sequence[bytes], tags: Sequence[str]) -> str:
        repo = self._repositories.setdefault(repository, _Repository())
        for data in blobs:
            repo.blobs[sha256_digest(data)] = data
        digest = sha256_digest(manifest)
        parsed = parse_manifest(manifest, digest, where=f"{self.host}/{repository}@{digest}")
        for item in [parsed.content.get("config"), *parsed.content.get("layers", [])]:
            if isinstance(item, dict) and item.get("digest") not in repo.blobs:
                raise PermanentError(
                    f"{self.host}/{repository}: blob unknown to registry: {item.get('digest')}",
                    code="manifest_blob_unknown",
                )
        repo.manifests[digest] = manifest
        for tag in tags:
            repo.tags[tag] = digest
        return digest

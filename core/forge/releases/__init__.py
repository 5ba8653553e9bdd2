"""Releases, the pure part: render ``deploy.resources``, pack them, describe the release.

Bytes in, bytes out; no registry, no network (issue 8, items 3-4; DESIGN §8). The release worker
renders with the artifacts' values (:func:`render_resources`), packs the objects
(:func:`pack_resources`) and writes :class:`ReleaseMetadata`; the CMP reads both back
(:func:`unpack_resources`, :meth:`ReleaseMetadata.from_bytes`) and resolves the environment
(:func:`resolve_env`). docs/releases.md describes the language, the layout and the limits.
"""

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562): the CMP imports forge.releases.expressions on every render and must
# not pay for the pydantic models and the Kubernetes schemas it does not use.
_EXPORTS = {
    "ARTIFACT_FIELDS": "forge.releases.expressions",
    "ArtifactMetadata": "forge.releases.metadata",
    "KUBERNETES_VERSION": "forge.releases.schemas",
    "MAX_COMPRESSED_BYTES": "forge.releases.pack",
    "MAX_ENTRIES": "forge.releases.pack",
    "MAX_RENDERED_BYTES": "forge.releases.render",
    "MAX_UNPACKED_BYTES": "forge.releases.pack",
    "Publication": "forge.releases.metadata",
    "Reference": "forge.releases.expressions",
    "ReleaseArtifact": "forge.releases.metadata",
    "ReleaseMetadata": "forge.releases.metadata",
    "ResourceEntry": "forge.releases.metadata",
    "SourceInfo": "forge.releases.metadata",
    "artifact_fields": "forge.releases.expressions",
    "artifact_references": "forge.releases.expressions",
    "canonical_size": "forge.releases.render",
    "check_references": "forge.releases.expressions",
    "has_schema": "forge.releases.schemas",
    "is_env_expression": "forge.releases.expressions",
    "pack_resources": "forge.releases.pack",
    "render_resources": "forge.releases.render",
    "resolve_artifacts": "forge.releases.expressions",
    "resolve_env": "forge.releases.expressions",
    "summarize_resources": "forge.releases.metadata",
    "tracking_tag": "forge.releases.expressions",
    "unpack_resources": "forge.releases.pack",
    "unvalidated_resources": "forge.releases.render",
}

if TYPE_CHECKING:
    from forge.releases.expressions import (
        ARTIFACT_FIELDS,
        Reference,
        artifact_fields,
        artifact_references,
        check_references,
        is_env_expression,
        resolve_artifacts,
        resolve_env,
        tracking_tag,
    )
    from forge.releases.metadata import (
        ArtifactMetadata,
        Publication,
        ReleaseArtifact,
        ReleaseMetadata,
        ResourceEntry,
        SourceInfo,
        summarize_resources,
    )
    from forge.releases.pack import (
        MAX_COMPRESSED_BYTES,
        MAX_ENTRIES,
        MAX_UNPACKED_BYTES,
        pack_resources,
        unpack_resources,
    )
    from forge.releases.render import MAX_RENDERED_BYTES, canonical_size, render_resources, unvalidated_resources
    from forge.releases.schemas import KUBERNETES_VERSION, has_schema


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'forge.releases' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ARTIFACT_FIELDS",
    "KUBERNETES_VERSION",
    "MAX_COMPRESSED_BYTES",
    "MAX_ENTRIES",
    "MAX_RENDERED_BYTES",
    "MAX_UNPACKED_BYTES",
    "ArtifactMetadata",
    "Publication",
    "Reference",
    "ReleaseArtifact",
    "ReleaseMetadata",
    "ResourceEntry",
    "SourceInfo",
    "artifact_fields",
    "artifact_references",
    "canonical_size",
    "check_references",
    "has_schema",
    "is_env_expression",
    "pack_resources",
    "render_resources",
    "resolve_artifacts",
    "resolve_env",
    "summarize_resources",
    "tracking_tag",
    "unpack_resources",
    "unvalidated_resources",
]

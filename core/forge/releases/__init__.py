"""Releases, the pure part: render ``deploy.resources``, pack them, describe the release.

Bytes in, bytes out; no registry, no network (issue 8, items 3-4; DESIGN §8). The release worker
renders with the artifacts' values (:func:`render_resources`), packs the objects
(:func:`pack_resources`) and writes :class:`ReleaseMetadata`; the CMP reads both back
(:func:`unpack_resources`, :meth:`ReleaseMetadata.from_bytes`) and resolves the environment
(:func:`resolve_env`). docs/releases.md describes the language, the layout and the limits.
"""

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

"""Media types and fixed OCI values of releases and tracking images (DESIGN §8).

Consumers find layers by media type, never by position, so these strings are the contract
between the release worker that pushes and the CMP that pulls. The generic OCI values (image
manifest, empty config, digests) live with the registry contract in ``forge.ports.registry``.
"""

from __future__ import annotations

__all__ = [
    "ARTIFACT_METADATA",
    "LAYER_TYPE_ANNOTATION",
    "RELEASE_ARTIFACT_TYPE",
    "RELEASE_METADATA",
    "RESOURCES",
    "TRACKING_ARTIFACT_TYPE",
]

RELEASE_ARTIFACT_TYPE = "application/vnd.forge.release.v1"
"""``artifactType`` of a Release OCI manifest."""

RELEASE_METADATA = "application/vnd.forge.release.metadata.v1+json"
"""Layer holding :class:`~forge.releases.metadata.ReleaseMetadata` as canonical JSON."""

RESOURCES = "application/vnd.forge.resources.v1.tar+gzip"
"""Layer holding the rendered objects, packed by :func:`~forge.releases.pack.pack_resources`."""

ARTIFACT_METADATA = "application/vnd.forge.artifact.metadata.v1+json"
"""Layer of a tracking image: :class:`~forge.releases.metadata.ArtifactMetadata`."""

TRACKING_ARTIFACT_TYPE = "application/vnd.forge.artifact.v1"
"""``artifactType`` of a tracking image manifest."""

LAYER_TYPE_ANNOTATION = "org.catalyst-forge.layer.type"
"""Layer annotation (``metadata`` | ``resources``) kept for readers of the older layout."""

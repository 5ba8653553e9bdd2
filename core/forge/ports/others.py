"""Contracts whose adapters arrive with later capabilities (DESIGN §5).

They are declared now so the composition roots and tests speak one vocabulary from the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ArtifactRegistry",
    "DeployerStatus",
    "Identity",
    "IdentityProvider",
    "Manifest",
    "SecretProvider",
    "SourceHost",
]


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    artifact_type: str | None
    content: Mapping[str, Any]


class ArtifactRegistry(Protocol):
    """OCI distribution: push/pull by digest, tags, referrers."""

    async def push(
        self, ref: str, *, artifact_type: str, layers: Sequence[tuple[str, bytes]], annotations: Mapping[str, str]
    ) -> str:
        """Push an OCI 1.1 artifact; returns the manifest digest."""

    async def manifest(self, ref: str) -> Manifest: ...
    async def blob(self, repository: str, digest: str) -> bytes: ...
    async def tags(self, repository: str) -> list[str]: ...
    async def tag(self, ref: str, digest: str) -> None: ...


class DeployerStatus(Protocol):
    """Argo CD application health and sync state."""

    async def application(self, name: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    roles: frozenset[str]
    claims: Mapping[str, Any]


class IdentityProvider(Protocol):
    """OIDC: validate bearer tokens against the issuer's JWKS."""

    async def verify(self, token: str) -> Identity: ...


class SecretProvider(Protocol):
    async def get(self, name: str) -> str: ...


class SourceHost(Protocol):
    """GitHub: commit statuses. (Webhook signatures are checked by the API's webhook route.)"""

    async def set_commit_status(
        self, repository: str, sha: str, *, state: str, context: str, description: str, target_url: str | None
    ) -> None:
        """``state`` is pending, success, failure or error."""

"""Contracts whose adapters arrive with later capabilities (DESIGN §5).

They are declared now so the composition roots and tests speak one vocabulary from the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Identity",
    "IdentityProvider",
    "SecretProvider",
    "SourceHost",
]


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

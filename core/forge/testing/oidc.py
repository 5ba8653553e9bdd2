"""An OIDC issuer for in-process tests: the embedded :class:`LocalIssuer` behind an ``httpx.MockTransport``.

The same routing and keys as ``python -m forge.embedded.issuer`` (``LocalIssuer.answer``), without a
process: the API's verifier (:class:`OidcIdentityProvider`) fetches discovery and JWKS through the
transport, every request is counted (``requests``), and ``down = True`` makes the issuer answer 503
like an issuer under maintenance. ``shared_issuer()`` is one per test session, for fixtures that
build the API in-process and send its tokens by default.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from forge.adapters.oidc import OidcIdentityProvider
from forge.embedded.issuer import DEFAULT_AUDIENCE, LocalIssuer

__all__ = ["ALL_ROLES", "FakeIssuer", "shared_issuer"]

ALL_ROLES = ("developer", "approver", "operator", "service-account")


class FakeIssuer:
    def __init__(self, home: Path, url: str = "http://issuer.test", *, audience: str = DEFAULT_AUDIENCE) -> None:
        self.local = LocalIssuer(home, url, audience=audience)
        self.issuer = self.local.issuer
        self.audience = audience
        self.requests: list[str] = []
        self.down = False

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.down:
            return httpx.Response(503, json={"error": "temporarily unavailable"})
        status, body = self.local.answer(
            request.method,
            request.url.path,
            request.content,
            content_type=request.headers.get("Content-Type", ""),
            authorization=request.headers.get("Authorization"),
        )
        return httpx.Response(status, json=body)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def provider(self, **options: Any) -> OidcIdentityProvider:
        """A verifier of this issuer's tokens over the mock transport."""
        client = httpx.AsyncClient(transport=self.transport())
        return OidcIdentityProvider(self.issuer, audience=self.audience, client=client, **options)

    def token(self, roles: Sequence[str] = ALL_ROLES, subject: str = "tester", **options: Any) -> str:
        return self.local.mint(subject, roles, **options)

    def headers(self, roles: Sequence[str] = ALL_ROLES, subject: str = "tester") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(roles, subject)}"}


@functools.cache
def shared_issuer() -> FakeIssuer:
    """One issuer per test session (its keys in a temporary directory removed at exit)."""
    home = tempfile.TemporaryDirectory(prefix="forge-issuer-")
    issuer = FakeIssuer(Path(home.name))
    issuer.__dict__["_home"] = home  # kept alive as long as the issuer
    return issuer

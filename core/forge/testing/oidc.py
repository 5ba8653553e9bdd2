"""An OIDC issuer for in-process tests: the embedded :class:`LocalIssuer` behind an ``httpx.MockTransport``.

The same routing and keys as ``python -m forge.embedded.issuer`` (``LocalIssuer.answer``), without a
process: the API's verifier (:class:`OidcIdentityProvider`) fetches discovery and JWKS through the
transport, every request is counted (``requests``), and ``down = True`` makes the issuer answer 503
like an issuer under maintenance. ``shared_issuer()`` is one per test session, for fixtures that
build the API in-process and send its tokens by default.

:class:`FakeGithubActions` is GitHub Actions' token issuer at the HTTP boundary: its discovery
document and JWKS at ``https://token.actions.githubusercontent.com`` (GitHub's paths and shapes),
and workflow tokens with GitHub's claims (``repository``, ``repository_owner``, ``ref``, ``sha``,
``sub`` = ``repo:<owner>/<name>:ref:<ref>``, ``workflow``, ``run_id``, ``actor``, ...).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from forge.adapters.oidc import GITHUB_ACTIONS_ISSUER, OidcIdentityProvider, github_actions
from forge.embedded.issuer import DEFAULT_AUDIENCE, LocalIssuer

__all__ = ["ALL_ROLES", "FakeGithubActions", "FakeIssuer", "shared_issuer"]

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


class FakeGithubActions:
    """GitHub Actions' OIDC issuer: discovery and JWKS over a mock transport, workflow tokens minted here."""

    def __init__(self, audience: str = "forge") -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.audience = audience
        self.issuer = GITHUB_ACTIONS_ISSUER
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex.upper()
        public = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self._jwk = {"n": public["n"], "kty": "RSA", "kid": self.kid, "alg": "RS256", "e": public["e"], "use": "sig"}
        self.requests: list[str] = []

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url}")
        if request.method != "GET" or request.url.host != "token.actions.githubusercontent.com":
            return httpx.Response(404, json={"message": "Not Found"})
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "jwks_uri": f"{self.issuer}/.well-known/jwks",
                    "subject_types_supported": ["public", "pairwise"],
                    "response_types_supported": ["id_token"],
                    "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha", "repository",
                                         "repository_id", "repository_owner", "repository_owner_id", "run_id",
                                         "run_number", "run_attempt", "actor", "actor_id", "workflow", "event_name",
                                         "ref_type", "job_workflow_ref", "environment"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "scopes_supported": ["openid"],
                },
            )  # fmt: skip
        if request.url.path == "/.well-known/jwks":
            return httpx.Response(200, json={"keys": [dict(self._jwk)]})
        return httpx.Response(404, json={"message": "Not Found"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def provider(self, **options: Any) -> OidcIdentityProvider:
        """The API's verifier of GitHub Actions tokens, talking to this fake."""
        return github_actions(self.audience, client=httpx.AsyncClient(transport=self.transport()), **options)

    def token(
        self,
        for_repository: str = "acme/mono",
        ref: str = "refs/heads/main",
        *,
        audience: str | None = None,
        **extra: Any,
    ) -> str:
        """A workflow's id-token, with the claims GitHub puts in it (``extra`` overrides any; ``None`` drops one)."""
        import jwt

        repository = for_repository
        owner = repository.split("/", 1)[0]
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "sub": f"repo:{repository}:ref:{ref}",
            "aud": self.audience if audience is None else audience,
            "ref": ref,
            "sha": "a" * 40,
            "repository": repository,
            "repository_owner": owner,
            "repository_owner_id": "1",
            "repository_id": "2",
            "repository_visibility": "private",
            "run_id": "3",
            "run_number": "4",
            "run_attempt": "1",
            "actor": "jane",
            "actor_id": "5",
            "workflow": "ci",
            "event_name": "push",
            "ref_type": "branch",
            "job_workflow_ref": f"{repository}/.github/workflows/ci.yml@{ref}",
            "iss": self.issuer,
            "nbf": now - 5,
            "exp": now + 300,
            "iat": now,
        }
        claims.update(extra)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def headers(self, repository: str = "acme/mono", **options: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(repository, **options)}"}

"""IdentityProvider on OIDC bearer tokens (PyJWT): Keycloak in production, the local issuer when embedded.

What a token must be to pass :meth:`OidcIdentityProvider.verify`:

- signed with an asymmetric algorithm of :data:`ALLOWED_ALGORITHMS` (RS256, ES256) by a key of the
  issuer's JWKS, found by the header's ``kid``; ``none`` and every HS* are refused before any key is
  looked at (an HMAC "signed" with the public key is the classic confusion attack);
- ``iss`` equal to the configured issuer, ``aud`` naming the configured audience, ``exp`` in the
  future and ``sub`` present; ``exp``, ``nbf`` and ``iat`` are checked with at most
  :data:`MAX_LEEWAY` seconds of clock skew.

Keys: the discovery document (``<issuer>/.well-known/openid-configuration``) names ``jwks_uri``;
the JWKS is cached by ``kid``. An unknown ``kid`` (the issuer rotated its keys) refetches discovery
and JWKS, but at most once per ``refetch_interval``: a flood of tokens with made-up kids costs the
issuer one request per interval, not one per token. Known keys are refreshed the same way once
they are older than ``max_key_age``, so a key the issuer withdrew stops verifying. When the issuer
cannot be reached the last good JWKS keeps serving; with no JWKS ever fetched, verifying raises
``ServiceUnavailableError`` (503, retry), never an authentication error.

Errors are :class:`forge.errors.AuthenticationError` with a short reason for people and clients
("token expired", "audience mismatch", "unknown signing key", ...), which the API answers with 401.
Roles come from the dotted claim ``roles_claim`` (Keycloak's ``realm_access.roles``); a claim that is
missing or not a list of strings gives no roles. An issuer whose tokens carry no roles (GitHub
Actions) is given fixed ``roles`` instead, and may require more claims (``required_claims``).

Several issuers: :class:`TrustedIssuers` picks the verifier by the token's (unverified) ``iss`` and
lets it verify everything; a token naming no trusted issuer goes to the first (the platform's own),
which refuses it ("issuer mismatch"). :func:`github_actions` is the verifier of GitHub Actions'
workflow tokens (issuer :data:`GITHUB_ACTIONS_ISSUER`), whose identity holds the one role
:data:`GITHUB_ACTIONS_ROLE` and the claims ``repository``, ``repository_owner``, ``ref``, ``sha``
and ``sub`` (``repo:<owner>/<name>:ref:<ref>``); what that role may do is the API's role table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from forge.errors import AuthenticationError, ServiceUnavailableError
from forge.ports.others import Identity

__all__ = [
    "ALLOWED_ALGORITHMS",
    "GITHUB_ACTIONS_ISSUER",
    "GITHUB_ACTIONS_ROLE",
    "MAX_LEEWAY",
    "Discovery",
    "OidcIdentityProvider",
    "TrustedIssuers",
    "discovery_url",
    "github_actions",
    "roles_of",
]

ALLOWED_ALGORITHMS = ("RS256", "ES256")
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_ACTIONS_ROLE = "github-actions"
_GITHUB_CLAIMS = ("repository", "repository_owner", "ref", "sha")
MAX_LEEWAY = 60.0
_REQUIRED = ["iss", "aud", "exp", "sub"]
log = logging.getLogger("forge.oidc")


def discovery_url(issuer: str) -> str:
    """``<issuer>/.well-known/openid-configuration`` (OIDC Discovery 1.0 §4)."""
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class Discovery:
    """The parts of an issuer's discovery document Forge uses."""

    issuer: str
    jwks_uri: str
    token_endpoint: str | None
    device_authorization_endpoint: str | None = None


def roles_of(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """The strings at the dotted ``path`` of ``claims`` (``realm_access.roles``); none when absent or malformed."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return frozenset()
        value = value[part]
    if not isinstance(value, list):
        return frozenset()
    return frozenset(role for role in value if isinstance(role, str))


class OidcIdentityProvider:
    """Verifies bearer tokens of one issuer for one audience; the ``client`` is the caller's to close."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        client: httpx.AsyncClient,
        roles_claim: str = "realm_access.roles",
        leeway: float = 30.0,
        refetch_interval: float = 30.0,
        max_key_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        roles: frozenset[str] | None = None,
        required_claims: Sequence[str] = (),
        wall_clock: Callable[[], float] = time.time,
        verified_cache: int = 10_000,
    ) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY:.0f} seconds")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.roles_claim = roles_claim
        self._client = client
        self._leeway = leeway
        self._interval = refetch_interval
        self._max_age = max_key_age
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._discovery: Discovery | None = None
        self._fetched_at: float | None = None  # last attempt, successful or not
        self._fresh_at: float | None = None  # last successful JWKS fetch
        self._last_error: str | None = None
        self._lock = asyncio.Lock()
        self._fixed_roles = roles
        self._required = [*_REQUIRED, *required_claims]
        # Tokens already verified, until their exp: a client sends the same token on every request, and an
        # RS256 check per request cost the API 2/3 of its read throughput (bench/api.py).
        self._wall_clock = wall_clock
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._verified_max = verified_cache

    def cached(self, token: str) -> Identity | None:
        """The identity of ``token`` when this provider verified it and it has not expired since."""
        found = self._verified.get(token)
        if found is None:
            return None
        identity, expires = found
        if self._wall_clock() >= expires:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return identity

    async def verify(self, token: str) -> Identity:
        cached = self.cached(token)
        if cached is not None:
            return cached
        identity = await self._verify(token)
        if self._verified_max > 0:
            self._verified[token] = (identity, float(identity.claims["exp"]))
            if len(self._verified) > self._verified_max:
                self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed token") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            named = repr(alg)[:40]
            raise AuthenticationError(f"signing algorithm {named} is not allowed ({', '.join(ALLOWED_ALGORITHMS)})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("token names no signing key (kid)")
        key = await self._key(kid)
        if key.algorithm_name != alg:
            raise AuthenticationError("token algorithm does not match its signing key")
        claims = self._decode(token, key, alg)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("token subject (sub) is empty")
        roles = self._fixed_roles if self._fixed_roles is not None else roles_of(claims, self.roles_claim)
        return Identity(subject=subject, roles=roles, claims=claims)

    async def discovery(self) -> Discovery:
        """The issuer's discovery document (fetched once, then cached); ``ServiceUnavailableError`` when unreachable."""
        if self._discovery is None:
            async with self._lock:
                if self._discovery is None:
                    self._discovery = await self._fetch_discovery()
        return self._discovery

    async def refresh(self) -> None:
        """Fetch discovery and JWKS now (at start-up); failures are remembered, not raised."""
        async with self._lock:
            await self._refresh()

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": self._required, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("audience mismatch") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("issuer mismatch") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("invalid signature") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid token: {exc}") from None
        return claims

    async def _key(self, kid: str) -> jwt.PyJWK:
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # another request may have refreshed while this one waited
                    await self._refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fresh_at is None:
            raise ServiceUnavailableError(
                f"the identity provider {self.issuer} cannot be reached: {self._last_error}", retry_after=self._interval
            )
        raise AuthenticationError("unknown signing key")

    def _due(self, kid: str) -> bool:
        """Whether to refetch now: the kid is unknown or the keys are old, and the last attempt is an interval ago."""
        now = self._clock()
        if self._fetched_at is not None and now - self._fetched_at < self._interval:
            return False
        stale = self._fresh_at is None or now - self._fresh_at >= self._max_age
        return kid not in self._keys or stale

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            self._discovery = await self._fetch_discovery()
            keys = await self._fetch_jwks(self._discovery.jwks_uri)
        except ServiceUnavailableError as exc:
            self._last_error = exc.message
            log.warning("keeping the last signing keys of %s: %s", self.issuer, exc.message)
            return
        self._keys = keys
        self._fresh_at = self._clock()
        self._last_error = None

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"{what} at {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise ServiceUnavailableError(f"{what} at {url}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ServiceUnavailableError(f"{what} at {url} is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceUnavailableError(f"{what} at {url} is not a JSON object")
        return body

    async def _fetch_discovery(self) -> Discovery:
        url = discovery_url(self.issuer)
        body = await self._get_json(url, "discovery document")
        if str(body.get("issuer", "")).rstrip("/") != self.issuer:
            raise ServiceUnavailableError(f"discovery document at {url} names issuer {body.get('issuer')!r}")
        jwks_uri = body.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ServiceUnavailableError(f"discovery document at {url} has no jwks_uri")
        token_endpoint = body.get("token_endpoint")
        device = body.get("device_authorization_endpoint")
        return Discovery(
            issuer=self.issuer,
            jwks_uri=jwks_uri,
            token_endpoint=token_endpoint if isinstance(token_endpoint, str) else None,
            device_authorization_endpoint=device if isinstance(device, str) else None,
        )

    async def _fetch_jwks(self, url: str) -> dict[str, jwt.PyJWK]:
        body = await self._get_json(url, "JWKS")
        entries = body.get("keys")
        if not isinstance(entries, list):
            raise ServiceUnavailableError(f"JWKS at {url} has no keys list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
                continue  # Keycloak also publishes an RSA-OAEP encryption key
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or algorithm we never accept
            if key.algorithm_name in ALLOWED_ALGORITHMS:
                keys[entry["kid"]] = key
        return keys


def github_actions(audience: str, *, client: httpx.AsyncClient, **options: Any) -> OidcIdentityProvider:
    """The verifier of GitHub Actions' workflow tokens for ``audience`` (the workflow's ``id-token`` request)."""
    return OidcIdentityProvider(
        GITHUB_ACTIONS_ISSUER,
        audience=audience,
        client=client,
        roles=frozenset({GITHUB_ACTIONS_ROLE}),
        required_claims=_GITHUB_CLAIMS,
        **options,
    )


class TrustedIssuers:
    """An IdentityProvider over several issuers: the token's ``iss`` picks the verifier; the first is the default."""

    def __init__(self, primary: OidcIdentityProvider, *others: OidcIdentityProvider) -> None:
        self.primary = primary
        self.providers = {p.issuer: p for p in (primary, *others)}

    async def verify(self, token: str) -> Identity:
        for known in self.providers.values():  # the primary included
            cached = known.cached(token)
            if cached is not None:  # verified before: no decoding to find its issuer again
                return cached
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except (jwt.PyJWTError, AttributeError):
            issuer = None  # the primary verifier names what is wrong
        provider = self.providers.get(issuer.rstrip("/")) if isinstance(issuer, str) else None
        return await (provider or self.primary).verify(token)

    async def refresh(self) -> None:
        for provider in self.providers.values():
            await provider.refresh()

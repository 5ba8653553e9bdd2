"""Access tokens for Forge's own callers: the OAuth 2.0 client credentials grant, cached and renewed early.

``ClientCredentials(token_endpoint, client_id, secret, client=httpx.Client())`` asks the issuer's
token endpoint (RFC 6749 §4.4, client_secret_basic) for an access token and caches it until
``renew_before`` seconds before its ``expires_in`` ends (or a tenth of its life for short-lived
tokens), so callers never send a token about to expire and the issuer sees one request per token
life, not one per API call. :class:`BearerAuth` puts the token on every request of an httpx client
(``httpx.Client(auth=BearerAuth(source))``); a fixed token (``FORGE_TOKEN``) is a :class:`StaticToken`.

Errors at the boundary: the issuer unreachable, 5xx or 429 → ``ServiceUnavailableError``; a refused
client (400/401, OAuth ``error``/``error_description``) → ``AuthenticationError`` naming the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Protocol

import httpx

from forge.errors import AuthenticationError, ServiceUnavailableError

__all__ = ["BearerAuth", "ClientCredentials", "StaticToken", "TokenSource", "discover_token_endpoint"]


class TokenSource(Protocol):
    def token(self) -> str: ...


class StaticToken:
    """A token given by the user (``FORGE_TOKEN``, a cached login): sent as is."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


def discover_token_endpoint(issuer: str, client: httpx.Client | None = None) -> str:
    """The ``token_endpoint`` of an issuer's discovery document."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        if client is None:
            with httpx.Client(timeout=10) as own:
                response = own.get(url)
        else:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"the identity provider at {url} did not answer: {exc}") from None
    if response.status_code != 200:
        raise ServiceUnavailableError(f"the identity provider at {url} answered HTTP {response.status_code}")
    try:
        endpoint = response.json().get("token_endpoint")
    except (ValueError, AttributeError):
        endpoint = None
    if not isinstance(endpoint, str) or not endpoint:
        raise ServiceUnavailableError(f"the discovery document at {url} names no token_endpoint")
    return endpoint


class ClientCredentials:
    """One client's access tokens, cached; thread-safe (one request at a time renews)."""

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str,
        *,
        client: httpx.Client | None = None,
        renew_before: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self._secret = client_secret
        self._client = client
        self._renew_before = renew_before
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token, lifetime = self._fetch()
                margin = min(self._renew_before, lifetime / 10)
                self._renew_at = self._clock() + lifetime - margin
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the API refused it): the next call asks the issuer again."""
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        try:
            if self._client is not None:
                response = self._post(self._client)
            else:  # a short-lived caller (the CLI): one connection per token, a few per hour
                with httpx.Client(timeout=10) as client:
                    response = self._post(client)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"the token endpoint {self.token_endpoint} did not answer: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code in {429} or response.status_code >= 500:
            raise ServiceUnavailableError(f"the token endpoint {self.token_endpoint} answered {response.status_code}")
        if response.status_code != 200:
            reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            raise AuthenticationError(f"the issuer refused client {self.client_id!r}: {reason}")
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or str(body.get("token_type", "")).lower() != "bearer":
            raise ServiceUnavailableError(f"the token endpoint {self.token_endpoint} returned no bearer token")
        return token, float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 60.0

    def _post(self, client: httpx.Client) -> httpx.Response:
        return client.post(
            self.token_endpoint,
            data={"grant_type": "client_credentials"},
            auth=(self.client_id, self._secret),
            headers={"Accept": "application/json"},
        )


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request; on a 401 a renewable source is asked once more."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.source.token()}"
        response = yield request
        if response.status_code == 401 and isinstance(self.source, ClientCredentials):
            self.source.invalidate()
            request.headers["Authorization"] = f"Bearer {self.source.token()}"
            yield request

"""Access tokens for Forge's own callers: the OAuth 2.0 client credentials grant, cached and renewed early.

``ClientCredentials(token_endpoint, client_id, secret, client=httpx.Client())`` asks the issuer's
token endpoint (RFC 6749 §4.4, client_secret_basic) for an access token and caches it until
``renew_before`` seconds before its ``expires_in`` ends (or a tenth of its life for short-lived
tokens), so callers never send a token about to expire and the issuer sees one request per token
life, not one per API call.

``forge login``: :func:`start_device_login` and :func:`poll_device_login` run the device
authorization grant (RFC 8628, as Keycloak offers it); :class:`LoginCache` keeps the tokens in
``token.json`` (mode 0600) and :class:`CachedLogin` sends them, renewing with the refresh token.

:class:`BearerAuth` puts the token on every request of an httpx client
(``httpx.Client(auth=BearerAuth(source))``); a fixed token (``FORGE_TOKEN``) is a :class:`StaticToken`.

Errors at the boundary: the issuer unreachable, 5xx or 429 → ``ServiceUnavailableError``; a refused
client (400/401, OAuth ``error``/``error_description``) → ``AuthenticationError`` naming the client.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from forge.errors import AuthenticationError, ServiceUnavailableError

__all__ = [
    "DEVICE_GRANT",
    "BearerAuth",
    "CachedLogin",
    "ClientCredentials",
    "DeviceCode",
    "LoginCache",
    "Renewable",
    "StaticToken",
    "TokenSource",
    "UserTokens",
    "discover_token_endpoint",
    "poll_device_login",
    "refresh_user_tokens",
    "start_device_login",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class TokenSource(Protocol):
    def token(self) -> str: ...


@runtime_checkable
class Renewable(Protocol):
    """A token source that can fetch a new token when the API refused the last one."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


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
        if response.status_code == 401 and isinstance(self.source, Renewable):
            self.source.invalidate()
            request.headers["Authorization"] = f"Bearer {self.source.token()}"
            yield request


# -- forge login: the device authorization grant (RFC 8628) and a cached, refreshed user token ------------------


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """What the issuer answered a device authorization request: what to show the user, what to poll with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True, slots=True)
class UserTokens:
    """A user's tokens; ``expires_at`` is wall-clock (``time.time()``) so it survives in a file."""

    access_token: str
    refresh_token: str | None
    expires_at: float


def _form_post(client: httpx.Client, url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = client.post(url, data=data, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"the identity provider at {url} did not answer: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 429 or response.status_code >= 500:
        raise ServiceUnavailableError(f"the identity provider at {url} answered {response.status_code}")
    return response.status_code, body if isinstance(body, dict) else {}


def _user_tokens(body: dict[str, Any], url: str, now: float) -> UserTokens:
    token, lifetime, refresh = body.get("access_token"), body.get("expires_in"), body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise ServiceUnavailableError(f"the token endpoint {url} returned no access token")
    life = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 60.0
    return UserTokens(token, refresh if isinstance(refresh, str) and refresh else None, now + life)


def start_device_login(client: httpx.Client, endpoint: str, client_id: str) -> DeviceCode:
    """Ask the issuer's ``device_authorization_endpoint`` for a device code (RFC 8628 §3.1)."""
    status, body = _form_post(client, endpoint, {"client_id": client_id, "scope": "openid"})
    if status != 200:
        reason = body.get("error_description") or body.get("error") or f"HTTP {status}"
        raise AuthenticationError(f"the issuer refused a device login for client {client_id!r}: {reason}")
    try:
        return DeviceCode(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=float(body.get("expires_in", 600)),
            interval=float(body.get("interval", 5)),
        )
    except (KeyError, TypeError, ValueError):
        raise ServiceUnavailableError(f"the device authorization endpoint {endpoint} answered {body!r:.200}") from None


def poll_device_login(
    client: httpx.Client,
    token_endpoint: str,
    client_id: str,
    device: DeviceCode,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> UserTokens:
    """Poll the token endpoint until the user approves (RFC 8628 §3.4-3.5): ``interval`` apart, slower on slow_down."""
    interval, waited = device.interval, 0.0
    data = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "client_id": client_id}
    while True:
        sleep(interval)
        waited += interval
        status, body = _form_post(client, token_endpoint, data)
        if status == 200:
            return _user_tokens(body, token_endpoint, clock())
        error = body.get("error")
        if error == "authorization_pending" and waited < device.expires_in:
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error in {"authorization_pending", "expired_token"}:
            raise AuthenticationError("the login was not approved in time; run forge login again")
        if error == "access_denied":
            raise AuthenticationError("the login was denied")
        reason = body.get("error_description") or error or f"HTTP {status}"
        raise AuthenticationError(f"the issuer refused the device login: {reason}")


def refresh_user_tokens(client: httpx.Client, token_endpoint: str, client_id: str, refresh_token: str) -> UserTokens:
    """New tokens for a refresh token (RFC 6749 §6); ``AuthenticationError`` when the issuer no longer takes it."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    status, body = _form_post(client, token_endpoint, data)
    if status != 200:
        reason = body.get("error_description") or body.get("error") or f"HTTP {status}"
        raise AuthenticationError(f"the saved login can no longer be renewed ({reason}); run forge login again")
    return _user_tokens(body, token_endpoint, time.time())


class LoginCache:
    """``token.json`` of ``forge login``: the tokens and where they came from; written mode 0600, its folder 0700.

    Fields: ``issuer``, ``token_endpoint``, ``client_id``, ``api_url`` (or null), ``access_token``,
    ``refresh_token`` (or null) and ``expires_at`` (seconds since the epoch).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AuthenticationError(f"{self.path}: unreadable saved login ({exc}); run forge login again") from None
        return data if isinstance(data, dict) and isinstance(data.get("access_token"), str) else None

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        partial.chmod(0o600)
        partial.replace(self.path)

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class CachedLogin:
    """The saved ``forge login`` token; renewed with its refresh token ``renew_before`` seconds before it expires."""

    def __init__(self, cache: LoginCache, data: dict[str, Any], *, renew_before: float = 30.0) -> None:
        self.cache = cache
        self._data = data
        self._renew_before = renew_before
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str | None:
        url = self._data.get("api_url")
        return url.rstrip("/") if isinstance(url, str) and url else None

    def token(self) -> str:
        with self._lock:
            if time.time() >= float(self._data.get("expires_at", 0)) - self._renew_before:
                self._renew()
            return str(self._data["access_token"])

    def invalidate(self) -> None:
        with self._lock:
            self._data["expires_at"] = 0

    def _renew(self) -> None:
        refresh = self._data.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise AuthenticationError("the saved login expired; run forge login again")
        with httpx.Client(timeout=10) as client:
            fresh = refresh_user_tokens(
                client, str(self._data["token_endpoint"]), str(self._data["client_id"]), refresh
            )
        self._data.update(
            access_token=fresh.access_token,
            refresh_token=fresh.refresh_token or refresh,
            expires_at=fresh.expires_at,
        )
        self.cache.save(self._data)

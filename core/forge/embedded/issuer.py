"""A small local OIDC issuer for the embedded platform and tests, shaped like Keycloak (DESIGN §5, §9).

Keycloak cannot run here, and the embedded platform keeps authentication on, so ``forge dev up``
starts this issuer as a child process (``python -m forge.embedded.issuer``) on a free loopback port.
It serves what Forge's clients and verifier use of Keycloak, at Keycloak's paths for realm
:data:`REALM`::

    GET  /realms/forge/.well-known/openid-configuration    discovery (issuer, jwks_uri, token_endpoint)
    GET  /realms/forge/protocol/openid-connect/certs       JWKS: one RS256 signing key, kid = RFC 7638 thumbprint
    POST /realms/forge/protocol/openid-connect/token       grant_type=client_credentials (client_secret_basic
                                                           or client_secret_post) → access_token, expires_in,
                                                           token_type "Bearer" (Keycloak's body and error shapes);
                                                           urn:ietf:params:oauth:grant-type:device_code and
                                                           refresh_token (forge login)
    POST /realms/forge/protocol/openid-connect/auth/device the device authorization grant (RFC 8628) as Keycloak
                                                           offers it: device_code, user_code, verification_uri
    GET  /realms/forge/device                              the verification page: a form asking for the user
    POST /realms/forge/device                              code and the approval code (user_code, approval_code,
                                                           username) → approves the waiting device

The device grant's approval stands in for Keycloak's login page: the approval code is in
``home/approval-code`` (mode 0600), so whoever may read the issuer's home (and so its client
secrets) may approve a login, nobody else. Approved tokens hold the client's roles and the given
username as ``sub``; refresh tokens are opaque, kept in memory (an issuer restart means log in again),
and rotated on every use.

Access tokens carry Keycloak's claims: ``iss``, ``aud``, ``sub`` (``service-account-<client>``), ``azp``,
``exp``/``iat``/``jti``, ``typ`` "Bearer", ``realm_access.roles`` and ``preferred_username``.

Layout of the issuer's home (everything mode 0600, created on the first start, reused afterwards)::

    home/signing-key.pem    the RSA private key (PKCS#8); the same key, hence the same kid, across restarts
    home/clients.json       {"clients": {"<id>": {"secret": "...", "roles": ["developer", ...]}}}
    home/approval-code      the code the device verification page asks for
    home/issuer.log         server output

Clients are configured in ``clients.json``; the first start writes :data:`CLI_CLIENT` ("forge-cli",
developer and operator) with a random secret, which the CLI reads from this home to call the
embedded platform's API without any user step (:func:`client_credentials`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from forge.embedded.process import ServiceProcess, free_port, http_ready, start_service
from forge.errors import InvalidInputError

__all__ = [
    "CLI_CLIENT",
    "DEFAULT_AUDIENCE",
    "DEVICE_GRANT",
    "REALM",
    "TOKEN_LIFETIME",
    "LocalIssuer",
    "client_credentials",
    "start_issuer",
]

REALM = "forge"
DEFAULT_AUDIENCE = "forge"
TOKEN_LIFETIME = 300  # seconds; Keycloak's default access token lifespan
CLI_CLIENT = "forge-cli"
_CLI_ROLES = ("developer", "operator")
_KEY_FILE = "signing-key.pem"
_CLIENTS_FILE = "clients.json"
_OIDC = f"/realms/{REALM}/protocol/openid-connect"
_MAX_FORM = 16 * 1024
_APPROVAL_FILE = "approval-code"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_LIFETIME = 600  # seconds a device code waits for approval (Keycloak's default)
DEVICE_INTERVAL = 5  # seconds between polls (RFC 8628 §3.2 default)
REFRESH_LIFETIME = 1800  # Keycloak's SSO session idle default
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no words (RFC 8628 §6.1)


@dataclass(slots=True)
class _Device:
    client_id: str
    user_code: str
    expires_at: float
    approved_as: str | None = None
    denied: bool = False


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalIssuer:
    """The issuer's keys, clients and answers; :func:`serve` puts it on HTTP, tests may mint directly."""

    def __init__(self, home: Path, url: str, *, audience: str = DEFAULT_AUDIENCE) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.home = home
        self.base_url = url.rstrip("/")
        self.issuer = f"{self.base_url}/realms/{REALM}"
        self.audience = audience
        home.mkdir(parents=True, exist_ok=True)
        key_path = home / _KEY_FILE
        if not key_path.exists():
            fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = fresh.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write_private(key_path, pem)
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise InvalidInputError(f"{key_path}: not an RSA private key")
        self._key = loaded
        public = json.loads(RSAAlgorithm.to_jwk(loaded.public_key()))
        thumbprint = json.dumps({k: public[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
        self.kid = _b64(hashlib.sha256(thumbprint.encode()).digest())
        self._jwk = {"kid": self.kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": public["n"], "e": public["e"]}
        clients_path = home / _CLIENTS_FILE
        if not clients_path.exists():
            default = {"clients": {CLI_CLIENT: {"secret": secrets.token_urlsafe(32), "roles": list(_CLI_ROLES)}}}
            _write_private(clients_path, json.dumps(default, indent=2).encode())
        self.clients_path = clients_path
        approval = home / _APPROVAL_FILE
        if not approval.exists():
            _write_private(approval, secrets.token_urlsafe(16).encode())
        self.approval_path = approval
        self._devices: dict[str, _Device] = {}  # device_code -> device
        self._refresh: dict[str, tuple[str, tuple[str, ...], str, float]] = {}  # token -> sub, roles, client, expiry
        self._state = threading.Lock()  # the HTTP server answers on several threads

    # -- answers -----------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        oidc = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{oidc}/token",
            "jwks_uri": f"{oidc}/certs",
            "device_authorization_endpoint": f"{oidc}/auth/device",
            "grant_types_supported": ["client_credentials", DEVICE_GRANT, "refresh_token"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    def clients(self) -> dict[str, dict[str, Any]]:
        """The configured clients (read on every request, so edits apply without a restart)."""
        data = json.loads(self.clients_path.read_text())
        clients: dict[str, dict[str, Any]] = data["clients"]
        return clients

    def mint(
        self,
        subject: str,
        roles: Sequence[str],
        *,
        audience: str | Sequence[str] | None = None,
        lifetime: int = TOKEN_LIFETIME,
        client_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        issued_at: int | None = None,
    ) -> str:
        """A signed access token with Keycloak's claims; ``extra`` overrides any of them (tests)."""
        import jwt

        now = int(time.time()) if issued_at is None else issued_at
        claims: dict[str, Any] = {
            "exp": now + lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.audience if audience is None else audience,
            "sub": subject,
            "typ": "Bearer",
            "azp": client_id or subject,
            "acr": "1",
            "realm_access": {"roles": list(roles)},
            "scope": "profile email",
            "preferred_username": subject,
        }
        if client_id is not None:
            claims["clientId"] = client_id
        claims.update(extra or {})
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def answer(
        self, method: str, path: str, body: bytes = b"", *, content_type: str = "", authorization: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One HTTP request, routed: (status, JSON body). The HTTP server and in-process test transports share it."""
        if method == "GET" and path == f"/realms/{REALM}/.well-known/openid-configuration":
            return 200, self.discovery()
        if method == "GET" and path == f"{_OIDC}/certs":
            return 200, self.jwks()
        route = urlsplit(path)
        if method == "GET" and route.path == _DEVICE_PAGE:
            query = {key: values[0] for key, values in parse_qs(route.query).items()}
            return 200, _device_page(query.get("user_code", ""))
        forms = {
            f"{_OIDC}/token": self.token,
            f"{_OIDC}/auth/device": self.device_authorization,
            _DEVICE_PAGE: lambda form, _: self.approve(form),
        }
        if method != "POST" or path not in forms:
            return 404, {"error": "Unable to find matching target resource method"}
        return self._form(forms[path], body, content_type, authorization)

    @staticmethod
    def _form(
        handle: Callable[[Mapping[str, str], str | None], tuple[int, dict[str, Any]]],
        body: bytes,
        content_type: str,
        authorization: str | None,
    ) -> tuple[int, dict[str, Any]]:
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return 415, _oauth_error("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        if len(body) > _MAX_FORM:
            return 413, _oauth_error("invalid_request", "Request body too large")
        raw = body.decode("utf-8", errors="replace")
        form = {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}
        return handle(form, authorization)

    def device_authorization(self, form: Mapping[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """RFC 8628 §3.1-3.2: a device code waiting for approval, for a configured client (public: no secret)."""
        try:
            client_id, _ = _client_of(form, authorization)
        except ValueError:
            return 400, _oauth_error("invalid_request", "Invalid Authorization header")
        if not client_id or client_id not in self.clients():
            return 401, _oauth_error("invalid_client", "Invalid client or Invalid client credentials")
        device_code = secrets.token_urlsafe(32)
        user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
        user_code = f"{user_code[:4]}-{user_code[4:]}"
        with self._state:
            self._forget_expired()
            self._devices[device_code] = _Device(client_id, user_code, time.time() + DEVICE_LIFETIME)
        page = f"{self.issuer}/device"
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": page,
            "verification_uri_complete": f"{page}?user_code={user_code}",
            "expires_in": DEVICE_LIFETIME,
            "interval": DEVICE_INTERVAL,
        }

    def approve(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The verification page's form: approve (or, with ``deny``, refuse) the device showing ``user_code``."""
        expected = self.approval_path.read_text().strip()
        if not secrets.compare_digest(form.get("approval_code", "").strip(), expected):
            return 403, _oauth_error("access_denied", f"wrong approval code (it is in {self.approval_path})")
        code = form.get("user_code", "").strip().upper()
        with self._state:
            self._forget_expired()
            device = next((d for d in self._devices.values() if d.user_code == code), None)
            if device is None:
                return 404, _oauth_error("invalid_grant", "No device is waiting with that code (or it expired)")
            if form.get("deny"):
                device.denied = True
            else:
                device.approved_as = (form.get("username") or "local-user").strip()[:255] or "local-user"
        return 200, {"user_code": code, "approved": not device.denied}

    def _forget_expired(self) -> None:
        now = time.time()
        for code in [code for code, device in self._devices.items() if device.expires_at < now]:
            del self._devices[code]
        for token in [token for token, (*_, expiry) in self._refresh.items() if expiry < now]:
            del self._refresh[token]

    def _user_tokens(self, subject: str, roles: Sequence[str], client_id: str) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(32)
        with self._state:
            self._refresh[refresh] = (subject, tuple(roles), client_id, time.time() + REFRESH_LIFETIME)
        return {
            "access_token": self.mint(subject, roles, client_id=client_id),
            "expires_in": TOKEN_LIFETIME,
            "refresh_token": refresh,
            "refresh_expires_in": REFRESH_LIFETIME,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "profile email",
        }

    def _device_token(self, form: Mapping[str, str], client_id: str | None) -> tuple[int, dict[str, Any]]:
        """RFC 8628 §3.4-3.5, with Keycloak's error codes."""
        code = form.get("device_code", "")
        with self._state:
            self._forget_expired()
            device = self._devices.get(code)
            if device is None or device.client_id != client_id:
                return 400, _oauth_error("expired_token", "Device code not valid (expired or unknown)")
            if device.denied:
                del self._devices[code]
                return 400, _oauth_error("access_denied", "The end user denied the authorization request")
            if device.approved_as is None:
                return 400, _oauth_error("authorization_pending", "The authorization request is still pending")
            del self._devices[code]  # one use
        client = self.clients().get(device.client_id, {})
        roles = [str(role) for role in client.get("roles", [])]
        return 200, self._user_tokens(device.approved_as, roles, device.client_id)

    def _refresh_token(self, form: Mapping[str, str], client_id: str | None) -> tuple[int, dict[str, Any]]:
        with self._state:
            self._forget_expired()
            held = self._refresh.pop(form.get("refresh_token", ""), None)  # rotated: one use
        if held is None or held[2] != client_id:
            return 400, _oauth_error("invalid_grant", "Invalid refresh token")
        subject, roles, client, _ = held
        return 200, self._user_tokens(subject, roles, client)

    def token(self, form: Mapping[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (HTTP status, JSON body) as Keycloak answers them."""
        try:
            client_id, secret = _client_of(form, authorization)
        except ValueError:
            return 400, _oauth_error("invalid_request", "Invalid Authorization header")
        grant = form.get("grant_type")
        if not grant:
            return 400, _oauth_error("invalid_request", "Missing form parameter: grant_type")
        user_grants = {DEVICE_GRANT: self._device_token, "refresh_token": self._refresh_token}
        if grant in user_grants:
            return user_grants[grant](form, client_id)
        if grant != "client_credentials":
            return 400, _oauth_error("unsupported_grant_type", "Unsupported grant_type")
        return self._client_credentials(client_id, secret)

    def _client_credentials(self, client_id: str | None, secret: str | None) -> tuple[int, dict[str, Any]]:
        client = self.clients().get(client_id or "")
        if client is None:
            return 401, _oauth_error("invalid_client", "Invalid client or Invalid client credentials")
        if not secrets.compare_digest(str(client.get("secret", "")), secret or ""):
            return 401, _oauth_error("unauthorized_client", "Invalid client or Invalid client credentials")
        assert client_id is not None
        roles = [str(role) for role in client.get("roles", [])]
        token = self.mint(f"service-account-{client_id}", roles, client_id=client_id)
        return 200, {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "profile email",
        }


def _oauth_error(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}


_DEVICE_PAGE = f"/realms/{REALM}/device"


def _client_of(form: Mapping[str, str], authorization: str | None) -> tuple[str | None, str | None]:
    """``(client_id, secret)`` from client_secret_basic or the form; ``ValueError`` for a garbled header."""
    if authorization and authorization.lower().startswith("basic "):
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        user, _, password = decoded.partition(":")
        return unquote(user), unquote(password)
    return form.get("client_id"), form.get("client_secret")


def _device_page(user_code: str) -> dict[str, Any]:
    """The verification page (an HTML form posting to itself), as ``{"html": ...}`` for the server to send."""
    code = escape(user_code[:20])
    return {
        "html": "<!doctype html><title>Forge login</title><h1>Approve a forge login</h1>"
        f'<form method="post"><label>Code <input name="user_code" value="{code}"></label>'
        '<label>Approval code (in the issuer\'s home, file approval-code) <input name="approval_code" type="password">'
        '</label><label>Username <input name="username" value="local-user"></label>'
        '<button>Approve</button> <button name="deny" value="1">Deny</button></form>'
    }


def client_credentials(home: Path, client_id: str = CLI_CLIENT) -> tuple[str, str]:
    """``(client_id, secret)`` of a client configured in the issuer's home (the CLI's, by default)."""
    path = home / _CLIENTS_FILE
    try:
        client = json.loads(path.read_text())["clients"][client_id]
        return client_id, str(client["secret"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path}: no client {client_id!r} ({type(exc).__name__})") from None


# -- HTTP -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    issuer: LocalIssuer
    server_version = "forge-issuer"
    sys_version = ""

    def do_GET(self) -> None:
        self._json(*self.issuer.answer("GET", self.path))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_FORM:
            self._json(413, _oauth_error("invalid_request", "Request body too large"))
            return
        body = self.rfile.read(length)
        content_type, authorization = self.headers.get("Content-Type", ""), self.headers.get("Authorization")
        self._json(*self.issuer.answer("POST", self.path, body, content_type=content_type, authorization=authorization))

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        html = body.get("html") if set(body) == {"html"} else None
        data = html.encode() if isinstance(html, str) else json.dumps(body).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "text/html; charset=utf-8" if isinstance(html, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: one line per error answer only."""
        if args and str(args[1] if len(args) > 1 else "").startswith(("4", "5")):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(home: Path, port: int, *, audience: str = DEFAULT_AUDIENCE) -> None:
    """Serve the issuer on ``127.0.0.1:<port>`` until the process is signalled."""
    handler = type("Handler", (_Handler,), {"issuer": LocalIssuer(home, f"http://127.0.0.1:{port}", audience=audience)})
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


def start_issuer(
    home: Path, port: int | None = None, *, audience: str = DEFAULT_AUDIENCE, timeout: float = 30.0
) -> ServiceProcess:
    """Run the issuer as a child process; ready when discovery answers.

    ``url`` is the issuer (``http://127.0.0.1:<port>/realms/forge``); ``extra["audience"]`` the
    audience its tokens name, ``extra["home"]`` where its keys and clients live.
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    issuer = f"http://127.0.0.1:{port}/realms/{REALM}"
    argv = [sys.executable, "-m", "forge.embedded.issuer", "--home", str(home), "--port", str(port)]
    proc = start_service(
        "issuer",
        [*argv, "--audience", audience],
        url=issuer,
        ready=http_ready(f"{issuer}/.well-known/openid-configuration"),
        log=home / "issuer.log",
        timeout=timeout,
    )
    proc.extra.update({"audience": audience, "home": str(home.resolve())})
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forge.embedded.issuer", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Where keys and clients live")
    parser.add_argument("--port", type=int, required=True, help="Loopback port to listen on")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help="The aud of every token")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.home, args.port, audience=args.audience)
    return 0


if __name__ == "__main__":
    sys.exit(main())

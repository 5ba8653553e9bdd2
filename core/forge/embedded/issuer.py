"""A small local OIDC issuer for the embedded platform and tests, shaped like Keycloak (DESIGN §5, §9).

Keycloak cannot run here, and the embedded platform keeps authentication on, so ``forge dev up``
starts this issuer as a child process (``python -m forge.embedded.issuer``) on a free loopback port.
It serves what Forge's clients and verifier use of Keycloak, at Keycloak's paths for realm
:data:`REALM`::

    GET  /realms/forge/.well-known/openid-configuration    discovery (issuer, jwks_uri, token_endpoint)
    GET  /realms/forge/protocol/openid-connect/certs       JWKS: one RS256 signing key, kid = RFC 7638 thumbprint
    POST /realms/forge/protocol/openid-connect/token       grant_type=client_credentials (client_secret_basic
                                                           or client_secret_post) → access_token, expires_in,
                                                           token_type "Bearer" (Keycloak's body and error shapes)

Access tokens carry Keycloak's claims: ``iss``, ``aud``, ``sub`` (``service-account-<client>``), ``azp``,
``exp``/``iat``/``jti``, ``typ`` "Bearer", ``realm_access.roles`` and ``preferred_username``.

Layout of the issuer's home (everything mode 0600, created on the first start, reused afterwards)::

    home/signing-key.pem    the RSA private key (PKCS#8); the same key, hence the same kid, across restarts
    home/clients.json       {"clients": {"<id>": {"secret": "...", "roles": ["developer", ...]}}}
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
import time
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from forge.embedded.process import ServiceProcess, free_port, http_ready, start_service
from forge.errors import InvalidInputError

__all__ = [
    "CLI_CLIENT",
    "DEFAULT_AUDIENCE",
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

    # -- answers -----------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        oidc = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{oidc}/token",
            "jwks_uri": f"{oidc}/certs",
            "grant_types_supported": ["client_credentials"],
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
        if path != f"{_OIDC}/token" or method != "POST":
            return 404, {"error": "Unable to find matching target resource method"}
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return 415, _oauth_error("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        if len(body) > _MAX_FORM:
            return 413, _oauth_error("invalid_request", "Request body too large")
        raw = body.decode("utf-8", errors="replace")
        form = {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}
        return self.token(form, authorization)

    def token(self, form: Mapping[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (HTTP status, JSON body) as Keycloak answers them."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except ValueError:
                return 400, _oauth_error("invalid_request", "Invalid Authorization header")
            user, _, password = decoded.partition(":")
            client_id, secret = unquote(user), unquote(password)
        grant = form.get("grant_type")
        if not grant:
            return 400, _oauth_error("invalid_request", "Missing form parameter: grant_type")
        if grant != "client_credentials":
            return 400, _oauth_error("unsupported_grant_type", "Unsupported grant_type")
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
        data = json.dumps(body).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
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

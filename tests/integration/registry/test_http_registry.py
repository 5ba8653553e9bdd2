"""What only the stdlib reader meets on a real docker-registry: down, htpasswd, token auth, corrupt bytes, redirects.

The Bearer flow runs against docker-registry's own ``auth.token`` (distribution 2.8 verifies the
JWT's ``x5c`` chain against ``rootcertbundle``), with a token service in this test that issues
tokens the way distribution's token spec says (``GET <realm>?service=…&scope=…``, Basic
credentials, ``{"token": …}``), signed with a self-signed ES256 certificate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.server
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.integration.registry.test_oras_registry import PASSWORD, STORAGE, htpasswd_line

from forge.adapters.http_registry import HttpRegistryReader
from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess, start_service
from forge.embedded.registry import registry_binary, start_registry
from forge.errors import InvalidInputError, PermanentError, ServiceUnavailableError
from forge.ports.registry import Layer
from forge.settings import RegistrySettings

ARTIFACT = "application/vnd.forge.artifact.v1"
LAYER = Layer("application/vnd.forge.artifact.metadata.v1+json", b'{"name":"api"}')
SERVICE, ISSUER = "forge-registry", "forge-test-token-service"


async def _push(url: str, repository: str = "o/r/p") -> tuple[str, str]:
    """(manifest digest, layer digest) of an artifact pushed anonymously."""
    registry = OrasRegistry(url)
    digest = await registry.push_artifact(
        repository, artifact_type=ARTIFACT, layers=[LAYER], annotations={}, tags=["v1"]
    )
    return digest, (await registry.manifest(repository, digest)).content["layers"][0]["digest"]


async def test_a_stopped_registry_is_a_transient_error_naming_its_host(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "registry")
    digest, layer = await _push(server.url)
    host = server.url.removeprefix("http://")
    with HttpRegistryReader(server.url) as reader:
        assert (await reader.manifest("o/r/p", digest)).digest == digest  # a kept-alive connection now
        server.stop()
        for call in (
            reader.manifest("o/r/p", digest),
            reader.blob("o/r/p", layer, max_bytes=100),
            reader.tags("o/r/p"),
        ):
            with pytest.raises(ServiceUnavailableError) as caught:
                await call
            assert host in str(caught.value)


async def test_htpasswd_credentials_are_checked_and_never_echoed(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("forge", PASSWORD))
    server = start_registry(tmp_path / "registry", htpasswd=htpasswd)
    try:
        writer = OrasRegistry(server.url, username="forge", password=PASSWORD)
        digest = await writer.push_artifact(
            "o/r/p", artifact_type=ARTIFACT, layers=[LAYER], annotations={}, tags=["v1"]
        )
        layer = (await writer.manifest("o/r/p", digest)).content["layers"][0]["digest"]
        settings = RegistrySettings.model_validate({"url": server.url, "username": "forge", "password": PASSWORD})
        with HttpRegistryReader.from_settings(settings) as good:
            assert (await good.manifest("o/r/p", "v1")).digest == digest
            assert await good.blob("o/r/p", layer, max_bytes=100) == LAYER.data
            assert await good.tags("o/r/p") == ["v1"]
        for reader in (
            HttpRegistryReader(server.url, username="forge", password="not-the-password"),
            HttpRegistryReader(server.url),
        ):
            with reader:
                for call in (reader.manifest("o/r/p", digest), reader.blob("o/r/p", layer, max_bytes=100)):
                    with pytest.raises(PermanentError) as caught:
                        await call
                    assert caught.value.code == "registry_denied"
                    assert "not-the-password" not in str(caught.value)
                    assert PASSWORD not in str(caught.value)
    finally:
        server.stop()


async def test_bytes_that_do_not_match_their_digest_are_refused(registry_server: ServiceProcess) -> None:
    unique = uuid.uuid4().hex[:8]  # blobs (manifests too) are shared by content across the registry's repositories
    repository = f"o/r/corrupt{unique}"
    data = f"the real content {unique}".encode()
    writer = OrasRegistry(registry_server.url)
    digest = await writer.push_artifact(
        repository, artifact_type=ARTIFACT, layers=[Layer("application/octet-stream", data)], annotations={}
    )
    layer = (await writer.manifest(repository, digest)).content["layers"][0]["digest"]
    storage = registry_server.log.parent / STORAGE
    # The layer, then the manifest itself (still JSON, same size: only the digest can tell).
    for target, old, new in ((layer, b"real", b"fake"), (digest, b"artifact.v1", b"artifacT.v1")):
        stored = storage / target[7:9] / target[7:] / "data"
        assert old in stored.read_bytes()
        stored.write_bytes(stored.read_bytes().replace(old, new))

    with HttpRegistryReader(registry_server.url) as reader:
        with pytest.raises(PermanentError) as caught:
            await reader.blob(repository, layer, max_bytes=100)
        assert caught.value.code == "digest_mismatch"
        with pytest.raises(PermanentError) as caught:
            await reader.manifest(repository, digest)
        assert caught.value.code == "digest_mismatch"


def test_tags_follow_the_registrys_pages() -> None:
    """docker-registry 2.8 ignores ``?n=`` on tag lists (distribution 3 and Harbor page them), so a server
    that pages as the distribution spec says: ``n`` tags after ``last``, then ``Link: <…>; rel="next"``."""
    tags = ["a", "b", "c", "d", "e"]
    asked: list[str] = []

    def pages(request: http.server.BaseHTTPRequestHandler) -> None:
        asked.append(request.path)
        query = {name: values[-1] for name, values in parse_qs(urlsplit(request.path).query).items()}
        size, last = int(query.get("n", "1000")), query.get("last")
        rest = tags[tags.index(last) + 1 :] if last else tags
        page, more = rest[:size], rest[size:]
        link = {"Link": f'</v2/o/r/tags/list?n={size}&last={page[-1]}>; rel="next"'} if more else {}
        _reply(request, 200, json.dumps({"name": "o/r", "tags": page}).encode(), **link)

    server, url = _serve(pages)
    try:
        with HttpRegistryReader(url, tags_page=2) as reader:
            assert asyncio.run(reader.tags("o/r")) == tags
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/v2/o/r/tags/list?n=2", "/v2/o/r/tags/list?n=2&last=b", "/v2/o/r/tags/list?n=2&last=d"]


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:5000", "http://user:pw@127.0.0.1:5000", "http://127.0.0.1:5000/v2/", "127.0.0.1:5000"],
)
def test_a_bad_url_is_invalid_input_without_its_credentials(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        HttpRegistryReader(url)
    assert "FORGE_REGISTRY__URL" in str(caught.value)
    assert "pw" not in str(caught.value)


# Token auth: docker-registry's auth.token with a token service of our own.


@dataclass
class TokenService:
    url: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    users: dict[str, str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None

    def issue(self, query: dict[str, str], authorization: str) -> tuple[int, bytes]:
        if self.fail_with is not None:
            return self.fail_with, b"{}"
        user = None
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return 401, b'{"details":"bad credentials"}'
            user = name
        self.requests.append({**query, "user": user})
        actions = ["pull", "push"] if user else []  # anonymous: a token that grants nothing
        access = []
        for scope in query.get("scope", "").split(" "):
            kind, _, rest = scope.partition(":")
            name, _, _ = rest.rpartition(":")
            if kind == "repository" and name:
                access.append({"type": "repository", "name": name, "actions": actions})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": query.get("service", ""),
            "iat": now,
            "nbf": now - 60,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        x5c = [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()]
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": x5c})
        return 200, json.dumps({"token": token, "expires_in": 3600}).encode()


def _serve(handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handle(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _reply(request: http.server.BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    request.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def _certificate(key: ec.EllipticCurvePrivateKey, *, san: bool = False) -> x509.Certificate:
    """Self-signed; with ``san``, a server certificate for 127.0.0.1."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forge test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder()
    if san:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[ServiceProcess, TokenService]]:
    """docker-registry with ``auth.token`` (content pushed before auth was turned on) and its token service."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(key)
    service = TokenService("", key, certificate, {"forge": PASSWORD})

    def handle(request: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        status, body = service.issue(query, request.headers.get("Authorization", ""))
        _reply(request, status, body, **{"Content-Type": "application/json"})

    http_server, service.url = _serve(handle)
    bundle = tmp_path / "token-signer.pem"
    bundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    token = {"realm": f"{service.url}/token", "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)}
    server = _pushed_then_restarted(tmp_path / "registry", auth={"token": token})
    yield server, service
    server.stop()
    http_server.shutdown()
    http_server.server_close()


def _pushed_then_restarted(data_dir: Path, **config: Any) -> ServiceProcess:
    """A registry holding ``o/r/p:v1`` (pushed anonymously over http), restarted with ``config`` added."""
    server = start_registry(data_dir)
    try:
        asyncio.run(_push(server.url))
    finally:
        server.stop()
    return _restart(data_dir, **config)


def _restart(data_dir: Path, **config: Any) -> ServiceProcess:
    """Start the registry of ``data_dir`` again (same address), with ``config`` merged into its config."""
    written = json.loads((data_dir / "config.yml").read_text())
    for key, value in config.items():  # sections merge: "http" keeps its address
        written[key] = {**written.get(key, {}), **value}
    (data_dir / "config.yml").write_text(json.dumps(written))
    exe = registry_binary()
    assert exe is not None
    scheme = "https" if "tls" in written["http"] else "http"
    port = urlsplit(f"http://{written['http']['addr']}").port
    return start_service(
        "docker-registry",
        [exe, "serve", str((data_dir / "config.yml").resolve())],
        url=f"{scheme}://127.0.0.1:{port}",
        ready=_listening(port),
        log=data_dir / "registry.log",
        timeout=30,
    )


def _listening(port: int | None) -> Callable[[], bool]:
    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port or 0), timeout=1).close()
            return True
        except OSError:
            return False

    return check


async def test_the_bearer_challenge_is_answered_with_a_token_for_the_repository(
    token_registry: tuple[ServiceProcess, TokenService],
) -> None:
    server, service = token_registry
    with HttpRegistryReader(server.url, username="forge", password=PASSWORD) as reader:
        manifest = await reader.manifest("o/r/p", "v1")
        layer = manifest.content["layers"][0]["digest"]
        assert await reader.blob("o/r/p", layer, max_bytes=100) == LAYER.data
        assert await reader.tags("o/r/p") == ["v1"]
        assert (await reader.manifest("o/r/p", manifest.digest)).digest == manifest.digest
    # One token for the repository, asked for with the challenge's service and scope, as the user.
    assert service.requests == [{"service": SERVICE, "scope": "repository:o/r/p:pull", "user": "forge"}]


async def test_a_token_the_registry_no_longer_accepts_is_fetched_again(
    token_registry: tuple[ServiceProcess, TokenService], tmp_path: Path
) -> None:
    """The signing key rotates and the registry restarts: the cached token is refused (on a new connection:
    the kept-alive one died with the old process), a new one is fetched once, the read goes on."""
    server, service = token_registry
    with HttpRegistryReader(server.url, username="forge", password=PASSWORD) as reader:
        first = await reader.manifest("o/r/p", "v1")
        server.stop()
        service.key = ec.generate_private_key(ec.SECP256R1())
        service.certificate = _certificate(service.key)
        (tmp_path / "token-signer.pem").write_bytes(service.certificate.public_bytes(serialization.Encoding.PEM))
        restarted = _restart(tmp_path / "registry")
        try:
            assert (await reader.manifest("o/r/p", "v1")).digest == first.digest
        finally:
            restarted.stop()
    assert len(service.requests) == 2


async def test_a_token_that_grants_nothing_or_refused_credentials_are_denied(
    token_registry: tuple[ServiceProcess, TokenService],
) -> None:
    server, service = token_registry
    for reader in (
        HttpRegistryReader(server.url),  # anonymous: the service issues a token without access
        HttpRegistryReader(server.url, username="forge", password="not-the-password"),  # the service says 401
    ):
        with reader, pytest.raises(PermanentError) as caught:
            await reader.manifest("o/r/p", "v1")
        assert caught.value.code == "registry_denied"
        assert "not-the-password" not in str(caught.value)
    assert [request["user"] for request in service.requests] == [None]


async def test_a_token_service_that_fails_is_transient_naming_it(
    token_registry: tuple[ServiceProcess, TokenService],
) -> None:
    server, service = token_registry
    service.fail_with = 503
    reader = HttpRegistryReader(server.url, username="forge", password=PASSWORD)
    with reader, pytest.raises(ServiceUnavailableError) as caught:
        await reader.manifest("o/r/p", "v1")
    assert urlsplit(service.url).netloc in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_redirects_are_followed_and_credentials_stay_with_the_registry(registry_server: ServiceProcess) -> None:
    """registry front (asks for Basic, redirects) → storage host (another host:port, records headers) → registry."""
    repository = f"o/r/redirect{uuid.uuid4().hex[:8]}"
    digest, layer = await _push(registry_server.url, repository)
    seen: list[str | None] = []

    def storage(request: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(request.headers.get("Authorization"))
        _reply(request, 307, b"", Location=f"{registry_server.url}{request.path}")

    def front(request: http.server.BaseHTTPRequestHandler) -> None:
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"forge:" + PASSWORD.encode()).decode():
            _reply(request, 401, b"", **{"WWW-Authenticate": 'Basic realm="front"'})
        else:
            _reply(request, 307, b"", Location=f"{storage_url.replace('127.0.0.1', 'localhost')}{request.path}")

    storage_server, storage_url = _serve(storage)
    front_server, front_url = _serve(front)
    try:
        with HttpRegistryReader(front_url, username="forge", password=PASSWORD) as reader:
            assert (await reader.manifest(repository, digest)).digest == digest
            assert await reader.blob(repository, layer, max_bytes=100) == LAYER.data
    finally:
        for server in (storage_server, front_server):
            server.shutdown()
            server.server_close()
    assert seen == [None, None]


def test_https_verifies_the_registry_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS against the system's trust store (``SSL_CERT_FILE`` here): trusted reads, untrusted is refused."""
    tls = _tls_files(tmp_path)
    data_dir = tmp_path / "registry"
    server = _pushed_then_restarted(data_dir, http={"tls": tls})
    try:
        assert server.url.startswith("https://")
        with HttpRegistryReader(server.url) as untrusting, pytest.raises(ServiceUnavailableError) as caught:
            asyncio.run(untrusting.manifest("o/r/p", "v1"))
        assert "SSLCertVerificationError" in str(caught.value)
        monkeypatch.setenv("SSL_CERT_FILE", tls["certificate"])
        with HttpRegistryReader(server.url) as trusting:
            manifest = asyncio.run(trusting.manifest("o/r/p", "v1"))
            layer = manifest.content["layers"][0]["digest"]
            assert asyncio.run(trusting.blob("o/r/p", layer, max_bytes=100)) == LAYER.data
    finally:
        server.stop()


def test_credentials_are_never_sent_to_a_plain_http_realm_of_an_https_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = _tls_files(tmp_path)
    asked: list[str] = []

    def token_service(request: http.server.BaseHTTPRequestHandler) -> None:
        asked.append(request.path)
        _reply(request, 500, b"")

    token_server, token_url = _serve(token_service)
    token = {"realm": f"{token_url}/token", "service": SERVICE, "issuer": ISSUER, "rootcertbundle": tls["certificate"]}
    server = _pushed_then_restarted(tmp_path / "registry", http={"tls": tls}, auth={"token": token})
    monkeypatch.setenv("SSL_CERT_FILE", tls["certificate"])
    try:
        reader = HttpRegistryReader(server.url, username="forge", password=PASSWORD)
        with reader, pytest.raises(PermanentError) as caught:
            asyncio.run(reader.manifest("o/r/p", "v1"))
    finally:
        server.stop()
        token_server.shutdown()
        token_server.server_close()
    assert caught.value.code == "registry_denied"
    assert "plain http" in str(caught.value)
    assert asked == []  # the token service never saw the credentials


def _tls_files(folder: Path) -> dict[str, str]:
    """A self-signed server certificate for 127.0.0.1 and its key: docker-registry's ``http.tls``."""
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "tls.pem").write_bytes(_certificate(key, san=True).public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {"certificate": str(folder / "tls.pem"), "key": str(folder / "tls.key")}

"""The embedded OIDC issuer as a real process: Keycloak-shaped answers, keys kept across restarts."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forge.adapters.oidc import OidcIdentityProvider
from forge.adapters.oidc_client import ClientCredentials, discover_token_endpoint
from forge.embedded.issuer import CLI_CLIENT, TOKEN_LIFETIME, LocalIssuer, client_credentials, start_issuer
from forge.embedded.process import ServiceProcess, free_port
from forge.errors import AuthenticationError


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = start_issuer(tmp_path / "issuer")
    yield proc
    proc.stop()


def _token(issuer: ServiceProcess) -> str:
    with httpx.Client(timeout=5) as client:
        endpoint = discover_token_endpoint(issuer.url, client)
        client_id, secret = client_credentials(Path(issuer.extra["home"]))
        return ClientCredentials(endpoint, client_id, secret, client=client).token()


def test_discovery_and_jwks_are_shaped_like_keycloaks(issuer: ServiceProcess) -> None:
    found = httpx.get(f"{issuer.url}/.well-known/openid-configuration").json()
    assert found["issuer"] == issuer.url
    assert found["token_endpoint"] == f"{issuer.url}/protocol/openid-connect/token"
    assert found["jwks_uri"] == f"{issuer.url}/protocol/openid-connect/certs"
    (key,) = httpx.get(found["jwks_uri"]).json()["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert set(key) == {"kid", "kty", "alg", "use", "n", "e"}


def test_keys_and_clients_are_private_to_the_user(issuer: ServiceProcess) -> None:
    home = Path(issuer.extra["home"])
    for name in ("signing-key.pem", "clients.json"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


async def test_a_client_credentials_token_verifies_with_the_clients_roles(issuer: ServiceProcess) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        verifier = OidcIdentityProvider(issuer.url, audience=issuer.extra["audience"], client=client)
        identity = await verifier.verify(_token(issuer))
    assert identity.subject == f"service-account-{CLI_CLIENT}"
    assert identity.roles == frozenset({"developer", "operator"})


def test_the_token_endpoint_answers_like_keycloak(issuer: ServiceProcess) -> None:
    endpoint = f"{issuer.url}/protocol/openid-connect/token"
    client_id, secret = client_credentials(Path(issuer.extra["home"]))
    ok = httpx.post(endpoint, data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert ok.status_code == 200
    body = ok.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", TOKEN_LIFETIME)
    posted = httpx.post(
        endpoint, data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert posted.status_code == 200
    wrong = httpx.post(endpoint, data={"grant_type": "client_credentials"}, auth=(client_id, "nope"))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized_client")
    unknown = httpx.post(endpoint, data={"grant_type": "client_credentials"}, auth=("who", "x"))
    assert (unknown.status_code, unknown.json()["error"]) == (401, "invalid_client")
    grant = httpx.post(endpoint, data={"grant_type": "password"}, auth=(client_id, secret))
    assert grant.json() == {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}
    assert httpx.post(endpoint, json={"grant_type": "client_credentials"}).status_code == 415
    assert httpx.post(endpoint, content=b"x" * 20_000, headers={"Content-Type": "text/plain"}).status_code == 413


def test_a_wrong_secret_is_refused_by_the_client(issuer: ServiceProcess) -> None:
    with httpx.Client(timeout=5) as client:
        endpoint = discover_token_endpoint(issuer.url, client)
        with pytest.raises(AuthenticationError, match="refused client 'forge-cli'"):
            ClientCredentials(endpoint, CLI_CLIENT, "wrong", client=client).token()


async def test_a_restart_keeps_the_key_and_the_clients(tmp_path: Path) -> None:
    home, port = tmp_path / "issuer", free_port()
    first = start_issuer(home, port)
    try:
        token = _token(first)
        kid = LocalIssuer(home, f"http://127.0.0.1:{port}").kid
        secret = client_credentials(home)[1]
    finally:
        first.stop()
    again = start_issuer(home, port)
    try:
        assert httpx.get(f"{again.url}/protocol/openid-connect/certs").json()["keys"][0]["kid"] == kid
        assert client_credentials(home)[1] == secret
        async with httpx.AsyncClient(timeout=5) as client:
            identity = await OidcIdentityProvider(again.url, audience="forge", client=client).verify(token)
        assert identity.subject == "service-account-forge-cli"
    finally:
        again.stop()


async def test_the_last_good_keys_serve_after_the_issuer_stops(tmp_path: Path) -> None:
    proc = start_issuer(tmp_path / "issuer")
    token = _token(proc)
    async with httpx.AsyncClient(timeout=5) as client:
        verifier = OidcIdentityProvider(proc.url, audience="forge", client=client, refetch_interval=0, max_key_age=0)
        await verifier.verify(token)
        proc.stop()
        assert (await verifier.verify(token)).subject == "service-account-forge-cli"

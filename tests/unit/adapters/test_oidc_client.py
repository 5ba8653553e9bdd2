"""Client credentials tokens: cached, renewed before expiry, errors translated (local issuer over a mock transport)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from forge.adapters.oidc_client import BearerAuth, ClientCredentials, StaticToken, discover_token_endpoint
from forge.embedded.issuer import CLI_CLIENT, TOKEN_LIFETIME, client_credentials
from forge.errors import AuthenticationError, ServiceUnavailableError
from forge.testing.oidc import FakeIssuer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer(tmp_path: Path) -> FakeIssuer:
    return FakeIssuer(tmp_path)


def _source(issuer: FakeIssuer, clock: Clock, secret: str | None = None) -> ClientCredentials:
    client = httpx.Client(transport=issuer.transport())
    endpoint = discover_token_endpoint(issuer.issuer, client)
    client_id, stored = client_credentials(issuer.local.home)
    return ClientCredentials(endpoint, client_id, secret or stored, client=client, renew_before=30, clock=clock)


def test_a_token_is_cached_and_renewed_before_it_expires(issuer: FakeIssuer) -> None:
    clock = Clock()
    source = _source(issuer, clock)
    first = source.token()
    assert [source.token() for _ in range(50)] == [first] * 50
    tokens = [r for r in issuer.requests if r.endswith("/token")]
    assert len(tokens) == 1
    clock.now = TOKEN_LIFETIME - 31  # still more than renew_before left
    assert source.token() == first
    clock.now = TOKEN_LIFETIME - 29  # less than 30 s left: renewed
    assert source.token() != first
    assert len([r for r in issuer.requests if r.endswith("/token")]) == 2


def test_the_token_carries_the_clients_roles(issuer: FakeIssuer) -> None:
    token = _source(issuer, Clock()).token()
    claims = json.loads(_payload(token))
    assert claims["sub"] == f"service-account-{CLI_CLIENT}"
    assert claims["realm_access"]["roles"] == ["developer", "operator"]
    assert claims["azp"] == CLI_CLIENT


def _payload(token: str) -> str:
    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_a_wrong_secret_is_an_authentication_error_naming_the_client(issuer: FakeIssuer) -> None:
    with pytest.raises(AuthenticationError) as caught:
        _source(issuer, Clock(), secret="wrong").token()
    assert caught.value.message == (
        "the issuer refused client 'forge-cli': Invalid client or Invalid client credentials"
    )


def test_an_issuer_that_is_down_is_transient(issuer: FakeIssuer) -> None:
    source = _source(issuer, Clock())
    issuer.down = True
    with pytest.raises(ServiceUnavailableError, match="answered 503"):
        source.token()
    with pytest.raises(ServiceUnavailableError, match="answered HTTP 503"):
        discover_token_endpoint(issuer.issuer, httpx.Client(transport=issuer.transport()))


def test_bearer_auth_sends_the_token_and_renews_once_on_401(issuer: FakeIssuer) -> None:
    source = _source(issuer, Clock())
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200, json={})

    with httpx.Client(transport=httpx.MockTransport(api), auth=BearerAuth(source)) as client:
        assert client.get("http://api.test/v1/runs").status_code == 200
    assert len(seen) == 2
    assert seen[0] != seen[1]
    assert all(header.startswith("Bearer ey") for header in seen)
    with httpx.Client(transport=httpx.MockTransport(api), auth=BearerAuth(StaticToken("abc"))) as client:
        assert client.get("http://api.test/v1/runs").status_code == 200
    assert seen[-1] == "Bearer abc"

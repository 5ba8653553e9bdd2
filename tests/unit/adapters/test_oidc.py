"""OidcIdentityProvider against the local issuer's answers (an httpx mock transport at the HTTP boundary)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from forge.adapters.oidc import OidcIdentityProvider, roles_of
from forge.errors import AuthenticationError, ServiceUnavailableError
from forge.testing.oidc import FakeIssuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer(tmp_path: Path) -> FakeIssuer:
    return FakeIssuer(tmp_path / "issuer")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(issuer: FakeIssuer, clock: Clock) -> AsyncIterator[OidcIdentityProvider]:
    verifier = issuer.provider(clock=clock, refetch_interval=30, max_key_age=600)
    yield verifier
    await verifier._client.aclose()


async def _reason(provider: OidcIdentityProvider, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await provider.verify(token)
    return caught.value.message


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_valid_token_gives_its_subject_and_roles(issuer: FakeIssuer, provider: OidcIdentityProvider) -> None:
    identity = await provider.verify(issuer.token(["developer", "approver"], subject="jane"))
    assert identity.subject == "jane"
    assert identity.roles == {"developer", "approver"}
    assert identity.claims["iss"] == issuer.issuer


async def test_discovery_names_the_token_endpoint(issuer: FakeIssuer, provider: OidcIdentityProvider) -> None:
    found = await provider.discovery()
    assert found.token_endpoint == f"{issuer.issuer}/protocol/openid-connect/token"
    assert found.jwks_uri == f"{issuer.issuer}/protocol/openid-connect/certs"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (lambda: {"lifetime": -120}, "token expired"),
        (lambda: {"audience": "someone-else"}, "audience mismatch"),
        (lambda: {"extra": {"iss": "https://evil.example/realms/forge"}}, "issuer mismatch"),
        (lambda: {"extra": {"nbf": int(time.time()) + 600}}, "token not yet valid"),
        (lambda: {"issued_at": int(time.time()) + 600}, "token not yet valid"),
    ],
)
async def test_claims_are_checked(
    issuer: FakeIssuer, provider: OidcIdentityProvider, options: Callable[[], dict[str, Any]], reason: str
) -> None:
    """``options`` is built when the test runs, not when it is collected (a long suite outlives 600 s)."""
    assert await _reason(provider, issuer.token(**options())) == reason


async def test_a_little_clock_skew_is_tolerated(issuer: FakeIssuer, provider: OidcIdentityProvider) -> None:
    assert (await provider.verify(issuer.token(lifetime=-10))).subject == "tester"
    assert (await provider.verify(issuer.token(extra={"nbf": int(time.time()) + 10}))).subject == "tester"


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "sub"])
async def test_required_claims(issuer: FakeIssuer, provider: OidcIdentityProvider, claim: str) -> None:
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    del claims[claim]
    token = jwt.encode(claims, issuer.local._key, algorithm="RS256", headers={"kid": issuer.local.kid})
    assert await _reason(provider, token) == f"token has no {claim} claim"


async def test_alg_none_and_hmac_with_the_public_key_are_refused(
    issuer: FakeIssuer, provider: OidcIdentityProvider
) -> None:
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': issuer.local.kid})}.{_b64(claims)}."
    assert await _reason(provider, unsigned) == "signing algorithm 'none' is not allowed (RS256, ES256)"
    head = _b64({"alg": "HS256", "kid": issuer.local.kid, "typ": "JWT"})
    public_n = issuer.local.jwks()["keys"][0]["n"]  # the attack signs with the published key
    forged = jwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), public_n, algorithm="HS256")
    assert await _reason(provider, f"{head}.{forged.split('.', 1)[1]}") == (
        "signing algorithm 'HS256' is not allowed (RS256, ES256)"
    )


async def test_garbage_and_tampered_tokens(issuer: FakeIssuer, provider: OidcIdentityProvider) -> None:
    assert await _reason(provider, "not-a-jwt") == "malformed token"
    head, body, signature = issuer.token(["developer"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["realm_access"]["roles"] = ["operator"]
    assert await _reason(provider, f"{head}.{_b64(claims)}.{signature}") == "invalid signature"
    no_kid = jwt.encode(claims, issuer.local._key, algorithm="RS256")
    assert await _reason(provider, no_kid) == "token names no signing key (kid)"


async def test_a_flood_of_unknown_kids_costs_the_issuer_one_fetch_per_interval(
    issuer: FakeIssuer, provider: OidcIdentityProvider, clock: Clock
) -> None:
    await provider.verify(issuer.token())
    assert len(issuer.requests) == 2  # discovery and JWKS
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    for n in range(200):
        token = jwt.encode(claims, issuer.local._key, algorithm="RS256", headers={"kid": f"made-up-{n}"})
        assert await _reason(provider, token) == "unknown signing key"
    assert len(issuer.requests) == 2  # the first fetch was less than an interval ago
    clock.now += 31
    for n in range(200):
        token = jwt.encode(claims, issuer.local._key, algorithm="RS256", headers={"kid": f"again-{n}"})
        assert await _reason(provider, token) == "unknown signing key"
    assert len(issuer.requests) == 4  # one more discovery + JWKS for the whole second flood
    await provider.verify(issuer.token())  # the known key never refetches
    assert len(issuer.requests) == 4


async def test_a_rotated_key_is_fetched_on_first_sight(
    tmp_path: Path, issuer: FakeIssuer, provider: OidcIdentityProvider, clock: Clock
) -> None:
    await provider.verify(issuer.token())
    rotated = FakeIssuer(tmp_path / "rotated")  # a new key at the same URL
    issuer.local = rotated.local
    clock.now += 31
    assert (await provider.verify(rotated.token(subject="after-rotation"))).subject == "after-rotation"


async def test_the_last_good_keys_serve_while_the_issuer_is_down(
    issuer: FakeIssuer, provider: OidcIdentityProvider, clock: Clock
) -> None:
    await provider.verify(issuer.token())
    issuer.down = True
    clock.now += 3600  # keys are old: a refresh is tried, fails, and the old keys stay
    assert (await provider.verify(issuer.token(subject="still"))).subject == "still"
    assert (await provider.verify(issuer.token(subject="again"))).subject == "again"
    assert issuer.requests[-1] == "GET /realms/forge/.well-known/openid-configuration"
    assert len(issuer.requests) == 3  # one failed attempt per interval, not one per token


async def test_an_issuer_never_reached_is_a_503_not_a_401(issuer: FakeIssuer, provider: OidcIdentityProvider) -> None:
    issuer.down = True
    with pytest.raises(ServiceUnavailableError, match="cannot be reached"):
        await provider.verify(issuer.token())


async def test_es256_keys_verify_and_algorithm_confusion_between_keys_fails(clock: Clock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "ec-1", "use": "sig"}
    enc_key = {"kid": "enc-1", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}
    issuer = "https://sso.example/realms/forge"

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": issuer, "jwks_uri": "https://sso.example/certs"})
        return httpx.Response(200, json={"keys": [enc_key, jwk]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        provider = OidcIdentityProvider(issuer, audience="forge", client=client, clock=clock, roles_claim="forge.roles")
        claims = {"iss": issuer, "aud": ["forge", "account"], "sub": "svc", "exp": int(time.time()) + 60}
        token = jwt.encode(
            {**claims, "forge": {"roles": ["operator"]}}, key, algorithm="ES256", headers={"kid": "ec-1"}
        )
        identity = await provider.verify(token)
        assert (identity.subject, identity.roles) == ("svc", frozenset({"operator"}))
        head = _b64({"alg": "RS256", "kid": "ec-1"})
        assert await _reason(provider, f"{head}.{token.split('.', 1)[1]}") == (
            "token algorithm does not match its signing key"
        )


def test_roles_come_from_a_dotted_claim_and_malformed_ones_give_none() -> None:
    assert roles_of({"realm_access": {"roles": ["a", 1, "b"]}}, "realm_access.roles") == {"a", "b"}
    assert roles_of({"realm_access": {"roles": "admin"}}, "realm_access.roles") == set()
    assert roles_of({"realm_access": []}, "realm_access.roles") == set()
    assert roles_of({"groups": ["x"]}, "groups") == {"x"}


def test_leeway_beyond_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="leeway"):
        OidcIdentityProvider("https://i", audience="a", client=httpx.AsyncClient(), leeway=61)


async def test_a_verified_token_is_not_verified_again_until_it_expires(
    issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API verifies each token once per process (an RS256 check per request cost 2/3 of its reads)."""
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr("forge.adapters.oidc.jwt.decode", counting)
    wall = Clock()
    wall.now = time.time()
    verifier = issuer.provider(wall_clock=wall, verified_cache=2)
    try:
        first, second, third = (issuer.token(["developer"], subject=s, lifetime=300) for s in ("a", "b", "c"))
        for _ in range(3):
            assert (await verifier.verify(first)).subject == "a"
        assert decoded == [first]
        wall.now += 301  # past exp: verified again, never served from memory
        assert (await verifier.verify(first)).subject == "a"
        assert decoded == [first, first]
        wall.now -= 301
        await verifier.verify(second)
        await verifier.verify(third)  # at most 2 kept: the oldest (first) goes
        await verifier.verify(third)
        await verifier.verify(first)
        assert decoded == [first, first, second, third, first]
    finally:
        await verifier._client.aclose()

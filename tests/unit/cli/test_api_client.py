"""Which API and which token a CLI command uses (forge.cli.api_client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forge.adapters.oidc_client import StaticToken
from forge.cli.api_client import api_client, api_url, token_source
from forge.errors import ServiceUnavailableError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FORGE_TOKEN",
        "FORGE_API_URL",
        "FORGE_AUTH__ISSUER",
        "FORGE_AUTH__CLIENT_ID",
        "FORGE_AUTH__CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_api_is_the_option_then_forge_api_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_API_URL", "https://forge.example/")
    assert api_url(None, tmp_path) == "https://forge.example"
    assert api_url("http://other:8000", tmp_path) == "http://other:8000"


def test_without_an_api_or_platform_the_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailableError, match="run `forge dev up`"):
        api_url(None, tmp_path)


def test_forge_token_wins_and_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "  tok-123 ")
    source = token_source("https://forge.example", tmp_path)
    assert isinstance(source, StaticToken)
    assert source.token() == "tok-123"
    with api_client("https://forge.example", tmp_path) as client:
        assert client.auth is not None


def test_the_embedded_issuer_is_used_only_for_the_embedded_api(tmp_path: Path) -> None:
    record = {
        "home": str(tmp_path),
        "api_url": "http://127.0.0.1:1",
        "env": {"FORGE_AUTH__ISSUER": "http://127.0.0.1:9/realms/forge"},
        "pids": {},
    }
    (tmp_path / "platform.json").write_text(json.dumps(record))
    (tmp_path / "issuer").mkdir()
    clients = {"clients": {"forge-cli": {"secret": "s", "roles": ["developer"]}}}
    (tmp_path / "issuer" / "clients.json").write_text(json.dumps(clients))
    assert token_source("https://someone-else.example", tmp_path) is None  # never sent to a foreign API
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        token_source("http://127.0.0.1:1", tmp_path)  # the embedded issuer is asked (and is down here)


def test_client_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_AUTH__ISSUER", "http://127.0.0.1:9/realms/forge")
    monkeypatch.setenv("FORGE_AUTH__CLIENT_ID", "ci")
    monkeypatch.setenv("FORGE_AUTH__CLIENT_SECRET", "s")
    with pytest.raises(ServiceUnavailableError, match="openid-configuration did not answer"):
        token_source("https://forge.example", tmp_path)

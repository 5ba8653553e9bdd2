"""``forge login`` against the local issuer's device authorization grant (RFC 8628, Keycloak's endpoints)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner

import forge.adapters.oidc_client as oidc_client
from forge.adapters.oidc_client import CachedLogin, DeviceCode, LoginCache
from forge.cli import login as login_module
from forge.cli.api_client import token_source
from forge.cli.main import cli
from forge.embedded.issuer import DEVICE_GRANT, start_issuer
from forge.embedded.process import ServiceProcess
from forge.errors import AuthenticationError

API = "http://forge-api.test"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_issuer(tmp_path_factory.mktemp("issuer"))
    yield proc
    proc.stop()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("FORGE_TOKEN", "FORGE_API_URL", "FORGE_AUTH__ISSUER", "FORGE_AUTH__CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "config" / "forge" / "token.json"


def _approval_code(issuer: ServiceProcess) -> str:
    return (Path(issuer.extra["home"]) / "approval-code").read_text().strip()


def _approve(issuer: ServiceProcess, user_code: str, **form: str) -> httpx.Response:
    data = {"user_code": user_code, "approval_code": _approval_code(issuer), **form}
    return httpx.post(f"{issuer.url}/device", data=data)


class Approver:
    """Replaces the wait between polls: approves (or denies) the waiting device on poll ``at``."""

    def __init__(self, issuer: ServiceProcess, monkeypatch: pytest.MonkeyPatch, *, at: int = 1, **form: str) -> None:
        self.issuer, self.at, self.form = issuer, at, form
        self.devices: list[DeviceCode] = []
        self.waits: list[float] = []
        real = oidc_client.start_device_login

        def spy(*args: Any, **kwargs: Any) -> DeviceCode:
            device = real(*args, **kwargs)
            self.devices.append(device)
            return device

        monkeypatch.setattr(oidc_client, "start_device_login", spy)
        monkeypatch.setattr(login_module, "_sleep", self.wait)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) == self.at:
            assert _approve(self.issuer, self.devices[-1].user_code, **self.form).status_code == 200


def _login(*args: str) -> Any:
    return CliRunner().invoke(cli, ["login", *args], catch_exceptions=False)


def test_discovery_names_the_device_endpoint_and_the_page_is_a_form(issuer: ServiceProcess) -> None:
    discovery = httpx.get(f"{issuer.url}/.well-known/openid-configuration").json()
    assert discovery["device_authorization_endpoint"] == f"{issuer.url}/protocol/openid-connect/auth/device"
    assert DEVICE_GRANT in discovery["grant_types_supported"]
    page = httpx.get(f"{issuer.url}/device", params={"user_code": "<b>"})
    assert page.headers["content-type"].startswith("text/html")
    assert 'name="approval_code"' in page.text
    assert "&lt;b&gt;" in page.text


def test_forge_login_saves_a_token_that_commands_send(
    issuer: ServiceProcess, config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    approver = Approver(issuer, monkeypatch, username="jane")
    result = _login("--issuer", issuer.url, "--api-url", API)
    assert result.exit_code == 0, result.output
    device = approver.devices[0]
    assert f"open {device.verification_uri_complete}" in result.output
    assert device.user_code in result.output
    assert approver.waits == [5.0]  # the issuer's interval, then one poll
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    saved = json.loads(config.read_text())
    assert saved["api_url"] == API
    assert saved["issuer"] == issuer.url
    assert saved["refresh_token"]
    claims = jwt.decode(saved["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "jane"
    assert set(claims["realm_access"]["roles"]) == {"developer", "operator"}

    source = token_source(API, tmp_path / "no-platform")
    assert isinstance(source, CachedLogin)
    assert source.token() == saved["access_token"]
    assert token_source("http://other.test", tmp_path / "no-platform") is None  # saved for another API
    monkeypatch.setenv("FORGE_TOKEN", "from-ci")
    assert token_source(API, tmp_path / "no-platform").token() == "from-ci"  # type: ignore[union-attr]


def test_polling_waits_while_the_login_is_pending(
    issuer: ServiceProcess, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approver = Approver(issuer, monkeypatch, at=3)
    result = _login("--issuer", issuer.url)
    assert result.exit_code == 0, result.output
    assert approver.waits == [5.0, 5.0, 5.0]  # two polls answered authorization_pending
    assert json.loads(config.read_text())["api_url"] is None


def test_a_denied_login_saves_nothing(issuer: ServiceProcess, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Approver(issuer, monkeypatch, deny="1")
    result = _login("--issuer", issuer.url)
    assert result.exit_code == 1
    assert "forge login: the login was denied" in result.output
    assert not config.exists()


def test_approval_needs_the_approval_code(issuer: ServiceProcess) -> None:
    device = httpx.post(f"{issuer.url}/protocol/openid-connect/auth/device", data={"client_id": "forge-cli"}).json()
    refused = httpx.post(f"{issuer.url}/device", data={"user_code": device["user_code"], "approval_code": "guess"})
    assert refused.status_code == 403
    token = httpx.post(
        f"{issuer.url}/protocol/openid-connect/token",
        data={"grant_type": DEVICE_GRANT, "device_code": device["device_code"], "client_id": "forge-cli"},
    )
    assert token.status_code == 400
    assert token.json()["error"] == "authorization_pending"
    unknown = httpx.post(f"{issuer.url}/protocol/openid-connect/auth/device", data={"client_id": "nobody"})
    assert unknown.status_code == 401


def test_a_saved_login_is_renewed_with_its_refresh_token(
    issuer: ServiceProcess, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Approver(issuer, monkeypatch)
    assert _login("--issuer", issuer.url, "--api-url", API).exit_code == 0
    first = json.loads(config.read_text())
    cache = LoginCache(config)
    expired = {**first, "expires_at": 0}
    login = CachedLogin(cache, expired)
    renewed = login.token()
    assert renewed != first["access_token"]
    again = json.loads(config.read_text())
    assert again["access_token"] == renewed
    assert again["refresh_token"] != first["refresh_token"]  # rotated
    stale = CachedLogin(cache, {**first, "expires_at": 0})  # the old refresh token was spent
    with pytest.raises(AuthenticationError, match="run forge login again"):
        stale.token()


def test_logout_forgets_the_saved_login(config: Path) -> None:
    LoginCache(config).save({"access_token": "x"})
    result = _login("--logout")
    assert result.exit_code == 0
    assert "removed" in result.output
    assert not config.exists()

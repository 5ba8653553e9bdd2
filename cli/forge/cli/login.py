"""``forge login``: a user token for a remote API, by the OAuth 2.0 device authorization grant (RFC 8628).

The issuer is ``--issuer``, else ``FORGE_AUTH__ISSUER``, else the running embedded platform's. Its
discovery document names the ``device_authorization_endpoint`` (Keycloak:
``<issuer>/protocol/openid-connect/auth/device``) and the ``token_endpoint``. The command prints
where to approve (stderr), polls the token endpoint with
``urn:ietf:params:oauth:grant-type:device_code`` at the interval the issuer asks for, and saves the
access and refresh tokens in ``$XDG_CONFIG_HOME/forge/token.json`` (``~/.config/forge``; mode 0600).
``--api-url`` is saved with them: commands then call that API with that token (``FORGE_TOKEN`` and
``--api``/``FORGE_API_URL`` still win). ``forge login --logout`` forgets the saved login.

The client is a public client of the issuer (``--client-id``, default ``forge-cli``; in Keycloak
with "OAuth 2.0 Device Authorization Grant" enabled). Exit codes: 0 logged in, 1 refused, denied,
expired or the issuer unreachable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from forge.cli.dev import HOME_OPTION
from forge.errors import ForgeError

if TYPE_CHECKING:
    import httpx

__all__ = ["login", "token_path"]


def token_path() -> Path:
    """``$XDG_CONFIG_HOME/forge/token.json`` (``~/.config/forge/token.json`` when unset)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "forge" / "token.json"


def _sleep(seconds: float) -> None:
    """Between polls (tests replace it: they approve instead of waiting)."""
    import time

    time.sleep(seconds)


def _issuer(given: str | None, home: Path) -> str:
    if given or (given := os.environ.get("FORGE_AUTH__ISSUER")):
        return given.rstrip("/")
    from forge.cli.platform import require_running

    issuer = require_running(home).env.get("FORGE_AUTH__ISSUER")
    if not issuer:
        raise click.UsageError("no issuer: give --issuer (or FORGE_AUTH__ISSUER), or start the embedded platform")
    return issuer.rstrip("/")


@click.command()
@click.option("--issuer", help="OIDC issuer URL (default: FORGE_AUTH__ISSUER, else the embedded platform's)")
@click.option("--api-url", help="The API these tokens are for (default: FORGE_API_URL; saved with the login)")
@click.option("--client-id", default="forge-cli", show_default=True, help="The issuer's public client of the CLI")
@click.option("--logout", is_flag=True, help="Forget the saved login and exit")
@HOME_OPTION
def login(issuer: str | None, api_url: str | None, client_id: str, logout: bool, home: Path) -> None:
    """Log in to a Forge API with your browser (device authorization grant)."""
    import httpx

    from forge.adapters.oidc_client import LoginCache, poll_device_login, start_device_login

    cache = LoginCache(token_path())
    if logout:
        click.echo(f"forge login: {'removed' if cache.delete() else 'no saved login at'} {cache.path}", err=True)
        return
    try:
        url = _issuer(issuer, home)
        with httpx.Client(timeout=10) as client:
            discovery = _discover(client, url)
            device = start_device_login(client, discovery["device_authorization_endpoint"], client_id)
            shown = device.verification_uri_complete or device.verification_uri
            click.echo(f"To log in, open {shown}", err=True)
            click.echo(f"and confirm the code {device.user_code}. Waiting...", err=True)
            tokens = poll_device_login(client, discovery["token_endpoint"], client_id, device, sleep=_sleep)
        cache.save(
            {
                "issuer": url,
                "token_endpoint": discovery["token_endpoint"],
                "client_id": client_id,
                "api_url": (api_url or os.environ.get("FORGE_API_URL") or "").rstrip("/") or None,
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "expires_at": tokens.expires_at,
            }
        )
    except ForgeError as exc:
        click.echo(f"forge login: {exc}", err=True)
        sys.exit(1)
    except httpx.HTTPError as exc:
        click.echo(f"forge login: the issuer did not answer: {exc}", err=True)
        sys.exit(1)
    click.echo(f"forge login: logged in to {url}; token saved in {cache.path}", err=True)


def _discover(client: httpx.Client, issuer: str) -> dict[str, str]:
    """The device authorization and token endpoints of the issuer's discovery document."""
    from forge.adapters.oidc import discovery_url
    from forge.errors import ServiceUnavailableError

    url = discovery_url(issuer)
    response = client.get(url, headers={"Accept": "application/json"})
    try:
        body = response.json() if response.status_code == 200 else {}
    except ValueError:
        body = {}
    endpoints = {key: body.get(key) for key in ("device_authorization_endpoint", "token_endpoint")}
    missing = [key for key, value in endpoints.items() if not isinstance(value, str) or not value]
    if missing:
        raise ServiceUnavailableError(
            f"the issuer's discovery document {url} (HTTP {response.status_code}) names no {' or '.join(missing)}"
        )
    return {key: str(value) for key, value in endpoints.items()}

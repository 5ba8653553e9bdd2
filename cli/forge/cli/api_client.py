"""The one place CLI commands build their HTTP client for the API: which API, and which token.

The API: ``--api`` when given, else ``FORGE_API_URL``, else the API ``forge login --api-url`` saved,
else the running embedded platform's.

The token, first found wins:

1. ``FORGE_TOKEN`` (CI, or any token you obtained yourself), sent as is;
2. the login ``forge login`` saved (``$XDG_CONFIG_HOME/forge/token.json``), for the API it was saved
   for (when it names none: any API but the embedded platform's), renewed with its refresh token;
3. ``FORGE_AUTH__ISSUER`` with ``FORGE_AUTH__CLIENT_ID``/``FORGE_AUTH__CLIENT_SECRET``: the client
   credentials grant at that issuer (a service account);
4. for the embedded platform's own API: the local issuer's ``forge-cli`` client (developer and
   operator) from ``<home>/issuer``, so no user step is needed;
5. none: the API answers 401 and the command says so.

Tokens from an issuer are cached for their life and renewed before they expire
(:class:`forge.adapters.oidc_client.ClientCredentials`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from forge.adapters.oidc_client import (
    BearerAuth,
    CachedLogin,
    ClientCredentials,
    LoginCache,
    StaticToken,
    TokenSource,
    discover_token_endpoint,
)
from forge.cli.platform import Platform, require_running
from forge.errors import ConflictError, ForgeError, InvalidInputError, NotFoundError, ServiceUnavailableError

__all__ = [
    "API_OPTION",
    "JSON_OPTION",
    "answer",
    "api_client",
    "api_url",
    "call_api",
    "print_table",
    "token_source",
]

T = TypeVar("T")


def api_url(given: str | None, home: Path) -> str:
    """``--api``, else ``FORGE_API_URL``, else the running embedded platform's API (or a one-line error)."""
    saved = _saved_login()
    chosen = given or os.environ.get("FORGE_API_URL") or (saved.api_url if saved is not None else None)
    return (chosen or require_running(home).api_url).rstrip("/")


def _saved_login() -> CachedLogin | None:
    from forge.cli.login import token_path

    cache = LoginCache(token_path())
    data = cache.load()
    return CachedLogin(cache, data) if data is not None else None


def token_source(api: str, home: Path) -> TokenSource | None:
    """Where this command's bearer tokens come from (the order of the module docstring)."""
    if token := os.environ.get("FORGE_TOKEN", "").strip():
        return StaticToken(token)
    platform = Platform.load(home) if (home / "platform.json").exists() else None
    embedded = platform is not None and platform.api_url.rstrip("/") == api
    saved = _saved_login()
    if saved is not None and (saved.api_url == api or (saved.api_url is None and not embedded)):
        return saved
    issuer = os.environ.get("FORGE_AUTH__ISSUER")
    client_id, secret = os.environ.get("FORGE_AUTH__CLIENT_ID"), os.environ.get("FORGE_AUTH__CLIENT_SECRET")
    if issuer and client_id and secret:
        return ClientCredentials(discover_token_endpoint(issuer), client_id, secret)
    local = platform.env.get("FORGE_AUTH__ISSUER") if platform is not None else None
    if platform is not None and local and embedded:
        from forge.embedded.issuer import client_credentials

        client_id, secret = client_credentials(platform.home / "issuer")
        return ClientCredentials(discover_token_endpoint(local), client_id, secret)
    return None


def api_client(given: str | None, home: Path, *, timeout: float = 30) -> httpx.Client:
    """An HTTP client for the API with ``Authorization: Bearer`` on every request (when a token is found)."""
    api = api_url(given, home)
    source = token_source(api, home)
    return httpx.Client(base_url=api, timeout=timeout, auth=BearerAuth(source) if source is not None else None)


API_OPTION = click.option("--api", "api_url", help="API base URL (default: FORGE_API_URL, a login's, the embedded one)")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON on stdout")
_ERRORS: dict[int, type[ForgeError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConflictError,
    503: ServiceUnavailableError,
}


def call_api(command: str, api_url: str | None, home: Path, work: Callable[[httpx.Client], T]) -> T:
    """``work`` against the API; any failure is one line on stderr (``forge <command>: ...``) and exit 1."""
    try:
        with api_client(api_url, home) as client:
            return work(client)
    except ForgeError as exc:
        click.echo(f"forge {command}: {exc}", err=True)
        sys.exit(1)
    except httpx.HTTPError as exc:
        click.echo(f"forge {command}: the API did not answer: {exc}", err=True)
        sys.exit(1)


def answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; else the problem's detail (and the fields it names) as a typed error."""
    if response.is_success:
        return response.json()
    try:
        problem = response.json()
        detail = str(problem.get("detail") or response.reason_phrase)
        errors = problem.get("errors") or []
        if errors and isinstance(errors[0], dict) and "key" in errors[0]:
            detail = f"{detail}: {', '.join(str(e['key']) for e in errors)}"
    except (ValueError, AttributeError):
        detail = f"HTTP {response.status_code} {response.reason_phrase}"
    raise _ERRORS.get(response.status_code, ForgeError)(detail)


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

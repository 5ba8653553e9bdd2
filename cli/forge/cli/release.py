"""``forge release list|show|create``: the releases the platform recorded, and manual release requests.

stdout is data (a table, or the API's JSON with ``--json``), stderr is talk. Exit codes: 0 done,
1 the API refused (no such release, an ambiguous commit prefix, a malformed ref) or did not
answer, with its reason on one line; 2 a usage error. The API is the running embedded platform's
(``--home``) unless ``--api`` names one.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

from forge.cli.api_client import api_client
from forge.cli.dev import HOME_OPTION
from forge.errors import ConflictError, ForgeError, InvalidInputError, NotFoundError, ServiceUnavailableError

__all__ = ["release"]

API_OPTION = click.option("--api", "api_url", help="API base URL (default: the running embedded platform's)")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON on stdout")
_ERRORS: dict[int, type[ForgeError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConflictError,
    503: ServiceUnavailableError,
}


@click.group()
def release() -> None:
    """List, show and request releases."""


@release.command("list")
@click.option("--repository", "-r", help="Only releases of this repository (owner/repo)")
@click.option("--project", "-p", help="Only releases of this project")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="At most this many")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def list_releases(
    repository: str | None, project: str | None, limit: int, as_json: bool, api_url: str | None, home: Path
) -> None:
    """List releases, newest first."""
    params: dict[str, str | int] = {"limit": limit}
    if repository is not None:
        params["repository"] = repository
    if project is not None:
        params["project"] = project
    page = _call("list", api_url, home, lambda client: _get(client, "/v1/releases", params))
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    rows = [
        (
            str(r["number"]),
            r["repository"],
            r["project"],
            r["commit_sha"][:12],
            r["trigger"],
            ", ".join(a["alias"] for a in r["aliases"]),
            r["created_at"],
        )
        for r in page["items"]
    ]
    _table(("NUMBER", "REPOSITORY", "PROJECT", "COMMIT", "TRIGGER", "ALIASES", "CREATED"), rows)
    click.echo(f"{len(rows)} of {page['total']} release(s)", err=True)


@release.command()
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.argument("ref")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def show(repository: str, project: str, ref: str, as_json: bool, api_url: str | None, home: Path) -> None:
    """Show one release. REF is a release number, a tag, an alias (main-4) or a commit prefix (7+ hex)."""
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise click.BadParameter(f"{repository!r} is not OWNER/REPO", param_hint="OWNER/REPO")
    path = "/v1/releases/" + "/".join(quote(part, safe="") for part in (owner, name, project)) + "/" + quote(ref)
    body = _call("show", api_url, home, lambda client: _get(client, path, {}))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    for label, key in (
        ("release", "number"),
        ("repository", "repository"),
        ("project", "project"),
        ("commit", "commit_sha"),
        ("trigger", "trigger"),
        ("branch", "branch"),
        ("tag", "tag"),
        ("oci", "oci_ref"),
        ("digest", "oci_digest"),
        ("run", "run_id"),
        ("created", "created_at"),
        ("tagged", "tagged_at"),
    ):
        if body.get(key) is not None:
            click.echo(f"{label + ':':<12}{body[key]}")
    names = ", ".join(f"{a['alias']} ({a['type']})" for a in body["aliases"])
    click.echo(f"{'aliases:':<12}{names}")
    for artifact in body["artifacts"]:
        click.echo(f"{'artifact:':<12}{artifact['name']} ({artifact['type']}) {artifact['tracking_ref']}")
        for place in artifact["published"]:
            click.echo(f"{'':<12}  {place.get('publisher', '?')}: {place.get('location', '')}")


@release.command()
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.argument("commit")
@click.option("--branch", help="The branch the commit is on (recorded with the release; alias <branch>-<number>)")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def create(
    repository: str, project: str, commit: str, branch: str | None, as_json: bool, api_url: str | None, home: Path
) -> None:
    """Ask for a manual release of PROJECT at COMMIT (40 hex digits).

    An existing release of that commit is shown; otherwise a run of the commit that releases only
    PROJECT starts (the project needs a `release.on: [{manual: true}]` rule) and its URL is printed.
    """
    body = {"repository": repository, "project": project, "commit_sha": commit, "requested_by": getpass.getuser()}
    if branch is not None:
        body["branch"] = branch
    answer = _call("create", api_url, home, lambda client: _post(client, "/v1/releases", body))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif "number" in answer:
        click.echo(f"{project} is already released at {commit[:12]}: release {answer['number']} {answer['oci_ref']}")
    else:
        click.echo(f"run {answer['id']} releases {project} at {commit[:12]} once its checks pass")


def _call(command: str, api_url: str | None, home: Path, work: Callable[[httpx.Client], Any]) -> Any:
    """``work`` against the API; any failure is one line on stderr and exit 1."""
    try:
        with api_client(api_url, home) as client:
            return work(client)
    except ForgeError as exc:
        click.echo(f"forge release {command}: {exc}", err=True)
        sys.exit(1)
    except httpx.HTTPError as exc:
        click.echo(f"forge release {command}: the API did not answer: {exc}", err=True)
        sys.exit(1)


def _get(client: httpx.Client, path: str, params: dict[str, str | int]) -> Any:
    return _answer(client.get(path, params=params))


def _post(client: httpx.Client, path: str, body: dict[str, str]) -> Any:
    return _answer(client.post(path, json=body))


def _answer(response: httpx.Response) -> Any:
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


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

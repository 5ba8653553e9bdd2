"""``forge release list|show|create``: the releases the platform recorded, and manual release requests.

stdout is data (a table, or the API's JSON with ``--json``), stderr is talk. Exit codes: 0 done,
1 the API refused (no such release, an ambiguous commit prefix, a malformed ref) or did not
answer, with its reason on one line; 2 a usage error. The API is the running embedded platform's
(``--home``) unless ``--api`` names one.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from urllib.parse import quote

import click

from forge.cli.api_client import API_OPTION, JSON_OPTION, answer, call_api, print_table
from forge.cli.dev import HOME_OPTION

__all__ = ["release"]


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
    page = call_api("release list", api_url, home, lambda client: answer(client.get("/v1/releases", params=params)))
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
    print_table(("NUMBER", "REPOSITORY", "PROJECT", "COMMIT", "TRIGGER", "ALIASES", "CREATED"), rows)
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
    body = call_api("release show", api_url, home, lambda client: answer(client.get(path)))
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
    reply = call_api("release create", api_url, home, lambda client: answer(client.post("/v1/releases", json=body)))
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    elif "number" in reply:
        click.echo(f"{project} is already released at {commit[:12]}: release {reply['number']} {reply['oci_ref']}")
    else:
        click.echo(f"run {reply['id']} releases {project} at {commit[:12]} once its checks pass")

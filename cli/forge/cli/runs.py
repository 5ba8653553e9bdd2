"""``forge runs list|show|cancel``: pipeline runs of any API the CLI can reach (the embedded one, or a
deployed one with ``--api``/``FORGE_API_URL`` and a token: ``forge login`` or ``FORGE_TOKEN``).

stdout is data (a table, a summary, or the API's JSON with ``--json``), stderr is talk. Exit codes:
0 done, 1 the API refused or did not answer (its reason on one line), 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from forge.cli.api_client import API_OPTION, JSON_OPTION, answer, call_api, print_table
from forge.cli.dev import HOME_OPTION

__all__ = ["runs"]

_STATUSES = ("pending", "running", "success", "failed", "cancelled", "skipped")


@click.group()
def runs() -> None:
    """List, show and cancel pipeline runs."""


@runs.command("list")
@click.option("--repository", "-r", help="Only runs of this repository (owner/repo)")
@click.option("--branch", "-b", help="Only runs of this branch")
@click.option("--status", "-s", type=click.Choice(_STATUSES), help="Only runs with this status")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="At most this many")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def list_runs(
    repository: str | None,
    branch: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
    api_url: str | None,
    home: Path,
) -> None:
    """List runs, newest first."""
    filters = {"repository": repository, "branch": branch, "status": status}
    params: dict[str, str | int] = {"limit": limit, **{k: v for k, v in filters.items() if v is not None}}
    page = call_api("runs list", api_url, home, lambda client: answer(client.get("/v1/runs", params=params)))
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    rows = [
        (
            run["id"],
            run["repository"],
            _ref(run),
            run["commit_sha"][:12],
            run["status"],
            run.get("error_code") or "",
            run["created_at"],
        )
        for run in page["items"]
    ]
    print_table(("RUN", "REPOSITORY", "REF", "COMMIT", "STATUS", "ERROR", "CREATED"), rows)
    click.echo(f"{len(rows)} of {page['total']} run(s)", err=True)


@runs.command()
@click.argument("run_id", metavar="RUN")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def show(run_id: str, as_json: bool, api_url: str | None, home: Path) -> None:
    """Show a run: its status, discovery and releases."""
    run = call_api("runs show", api_url, home, lambda client: answer(client.get(f"/v1/runs/{run_id}")))
    if as_json:
        click.echo(json.dumps(run, indent=2))
        return
    for label, value in (
        ("run", run["id"]),
        ("repository", run["repository"]),
        ("ref", _ref(run)),
        ("commit", run["commit_sha"]),
        ("trigger", f"{run['trigger']} by {run['triggered_by']}"),
        ("status", run["status"]),
        ("error", run.get("error")),
        ("created", run["created_at"]),
        ("completed", run.get("completed_at")),
    ):
        if value:
            click.echo(f"{label + ':':<12}{value}")
    discovery: dict[str, Any] | None = run.get("discovery")
    if discovery is not None:
        affected = ", ".join(a["project"] for a in discovery["affected"]) or "none"
        click.echo(f"{'affected:':<12}{affected}")
        for intent in discovery.get("releases", []):
            click.echo(f"{'releases:':<12}{intent['project']} ({intent['reason']})")


@runs.command()
@click.argument("run_id", metavar="RUN")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def cancel(run_id: str, as_json: bool, api_url: str | None, home: Path) -> None:
    """Cancel a run: its running steps are stopped and it ends `cancelled`."""
    run = call_api("runs cancel", api_url, home, lambda client: answer(client.delete(f"/v1/runs/{run_id}")))
    if as_json:
        click.echo(json.dumps(run, indent=2))
    else:
        click.echo(f"run {run['id']}: cancel requested (status {run['status']})")


def _ref(run: dict[str, Any]) -> str:
    if run.get("tag"):
        return f"tag {run['tag']}"
    return str(run.get("branch") or "")

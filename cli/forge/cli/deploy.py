"""``forge deploy|approve|rollback|promote``: releases into environments, through the API (DESIGN §7).

``deploy`` asks for a deployment and, unless ``--no-wait``, waits until the controller has committed
the pointer (``active``) or failed; ``approve`` records an approver's approval; ``rollback`` deploys
the release that was active before the current one (or ``--to REF``); ``promote`` deploys what is
active in one environment to another. The policy is the API's: a refusal is its reason on stderr.

stdout is data (one line, or the API's JSON with ``--json``), stderr is talk. Exit codes: 0 done,
1 refused, failed or no answer (the reason on one line), 2 a usage error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from forge.cli.api_client import API_OPTION, JSON_OPTION, answer, api_client, call_api
from forge.cli.dev import HOME_OPTION
from forge.cli.platform import running_platform
from forge.domain.config import duration_seconds
from forge.errors import ForgeError, InvalidInputError

__all__ = [
    "approve",
    "deploy",
    "print_run_deployments",
    "promote",
    "render_command",
    "rollback",
    "wait_for_deployment",
]

_ENV_OPTION = click.option("--env", "environment", required=True, help="The environment (dev, staging, ...)")
_WAIT_OPTION = click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until the deployment is active or failed"
)
_TIMEOUT_OPTION = click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds to wait"
)


def render_command(deployment: dict[str, Any], gitops_url: str | None, registry_url: str | None) -> str:
    """The shell command that renders ``deployment``'s app as Argo CD's plugin would (``forge-cmp generate``)."""
    owner, repo = str(deployment["repository"]).lower().split("/", 1)
    app = f"{deployment['environment']}/apps/{owner}/{repo}/{deployment['project']}"
    clone = f"git clone -q {gitops_url or '<gitops url>'} /tmp/forge-gitops 2>/dev/null; "
    fetch = "git -C /tmp/forge-gitops pull -q; "
    registry = f"FORGE_REGISTRY__URL={registry_url or '<registry url>'}"
    return f"{clone}{fetch}cd /tmp/forge-gitops/{app} && ARGOCD_APP_SOURCE_PATH={app} {registry} forge-cmp generate"


def wait_for_deployment(client: httpx.Client, deployment: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the deployment until it is no longer pending; ``ForgeError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while deployment["status"] == "pending":
        if time.monotonic() > deadline:
            raise ForgeError(f"deployment {deployment['id']} is still pending after {timeout:g} s")
        time.sleep(0.2)
        deployment = answer(client.get(f"/v1/deployments/{deployment['id']}"))
    return deployment


def print_run_deployments(api: str, home: Path, run: dict[str, Any], *, timeout: float = 30) -> None:
    """After ``forge run``: the automatic deployments of the releases the run made (waited for until
    active or failed), each with the command that renders it, on stdout like the releases."""
    discovery = run.get("discovery") or {}
    automatic = [(d["project"], d["environment"]) for d in discovery.get("deploys", []) if d.get("auto")]
    if not automatic:
        return

    platform = running_platform(home)
    env = platform.env if platform is not None else {}
    if platform is not None and not env.get("FORGE_GITOPS__URL"):
        click.echo("no GitOps repository is configured: nothing is deployed", err=True)
        return
    try:
        with api_client(api, home) as client:
            releases = answer(client.get("/v1/releases", params={"run_id": run["id"], "limit": 500}))["items"]
            for release in releases:
                for project, environment in automatic:
                    if project != release["project"]:
                        continue
                    found = _deployment_of(client, release, environment, timeout)
                    if found is None:
                        click.echo(f"{project} #{release['number']}: no deployment to {environment} yet", err=True)
                        continue
                    click.echo(_describe(found))
                    if found["status"] == "active":
                        command = render_command(found, env.get("FORGE_GITOPS__URL"), env.get("FORGE_REGISTRY__URL"))
                        click.echo(f"render it: {command}")
                    elif found.get("error"):
                        click.echo(f"  {found['error']}", err=True)
    except (ForgeError, httpx.HTTPError) as exc:
        click.echo(f"deployments of the run could not be listed: {exc}", err=True)


def _deployment_of(
    client: httpx.Client, release: dict[str, Any], environment: str, timeout: float
) -> dict[str, Any] | None:
    """The deployment of ``release`` in ``environment`` once it is no longer pending (None if none came)."""
    path = f"/v1/deployments/{environment}/{release['repository']}/{release['project']}/history"
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = answer(client.get(path, params={"limit": 50}))["items"]
        found = next((d for d in items if d["release_id"] == release["id"]), None)
        if found is not None and found["status"] != "pending":
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@click.command()
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.argument("ref")
@_ENV_OPTION
@click.option("--reason", default="manual deployment", show_default=True, help="Why (in the GitOps commit)")
@_WAIT_OPTION
@_TIMEOUT_OPTION
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def deploy(
    repository: str,
    project: str,
    ref: str,
    environment: str,
    reason: str,
    wait: bool,
    timeout: float,
    as_json: bool,
    api_url: str | None,
    home: Path,
) -> None:
    """Deploy release REF (number, tag, alias or commit prefix) of PROJECT to --env."""
    body = {"repository": repository, "project": project, "ref": ref, "environment": environment, "reason": reason}
    _deploy("deploy", body, wait=wait, timeout=timeout, as_json=as_json, api_url=api_url, home=home)


@click.command()
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.argument("ref")
@_ENV_OPTION
@click.option("--justification", required=True, help="Why this release may go there")
@click.option("--expires", default="24h", show_default=True, help="How long the approval lasts (30m, 24h, 168h)")
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def approve(
    repository: str,
    project: str,
    ref: str,
    environment: str,
    justification: str,
    expires: str,
    as_json: bool,
    api_url: str | None,
    home: Path,
) -> None:
    """Approve release REF of PROJECT for --env (needs the approver role)."""
    try:
        seconds = duration_seconds(expires)
    except (ValueError, KeyError, IndexError) as exc:
        raise click.BadParameter(f"{expires!r} is not a duration such as 30m or 24h", param_hint="--expires") from exc
    body = {
        "repository": repository,
        "project": project,
        "ref": ref,
        "environment": environment,
        "justification": justification,
        "expires_in": seconds,
    }
    approval = call_api("approve", api_url, home, lambda client: answer(client.post("/v1/approvals", json=body)))
    if as_json:
        click.echo(json.dumps(approval, indent=2))
    else:
        click.echo(
            f"approval {approval['id']}: release {approval['release_number']} of {repository}/{project} may go to "
            f"{environment} until {approval['expires_at']}"
        )


@click.command()
@click.argument("environment", metavar="ENV")
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.option("--to", "ref", help="The release to go back to (default: the one active before the current one)")
@_WAIT_OPTION
@_TIMEOUT_OPTION
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def rollback(
    environment: str,
    repository: str,
    project: str,
    ref: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    api_url: str | None,
    home: Path,
) -> None:
    """Deploy an earlier release of PROJECT to ENV: the previous active one, or --to REF."""
    if ref is None:
        ref = str(
            call_api("rollback", api_url, home, lambda client: _previous(client, environment, repository, project))
        )
    body = {
        "repository": repository,
        "project": project,
        "ref": ref,
        "environment": environment,
        "reason": f"rollback to release {ref}",
    }
    _deploy("rollback", body, wait=wait, timeout=timeout, as_json=as_json, api_url=api_url, home=home)


@click.command()
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("project")
@click.option("--from", "source", required=True, help="The environment whose active release is promoted")
@click.option("--to", "target", required=True, help="The environment it goes to")
@_WAIT_OPTION
@_TIMEOUT_OPTION
@JSON_OPTION
@API_OPTION
@HOME_OPTION
def promote(
    repository: str,
    project: str,
    source: str,
    target: str,
    wait: bool,
    timeout: float,
    as_json: bool,
    api_url: str | None,
    home: Path,
) -> None:
    """Deploy the release active in --from to --to (an approval may be needed there)."""
    active = call_api(
        "promote",
        api_url,
        home,
        lambda client: answer(client.get(f"/v1/deployments/{source}/{repository}/{project}")),
    )
    body = {
        "repository": repository,
        "project": project,
        "ref": str(active["release_number"]),
        "environment": target,
        "reason": f"promote release {active['release_number']} from {source}",
    }
    _deploy("promote", body, wait=wait, timeout=timeout, as_json=as_json, api_url=api_url, home=home)


def _previous(client: httpx.Client, environment: str, repository: str, project: str) -> int:
    """The release that was active before the current one: the newest superseded deployment of another release."""
    page = answer(client.get(f"/v1/deployments/{environment}/{repository}/{project}/history", params={"limit": 500}))
    items: list[dict[str, Any]] = page["items"]
    current = next((d for d in items if d["status"] == "active"), None)
    if current is None:
        raise InvalidInputError(f"{repository}/{project} has no active deployment in {environment} to roll back")
    for item in items:
        if item["status"] == "superseded" and item["release_number"] != current["release_number"]:
            return int(item["release_number"])
    raise InvalidInputError(
        f"{repository}/{project} has no earlier release in {environment} than release {current['release_number']}; "
        "name one with --to"
    )


def _deploy(
    command: str, body: dict[str, str], *, wait: bool, timeout: float, as_json: bool, api_url: str | None, home: Path
) -> None:
    def work(client: httpx.Client) -> dict[str, Any]:
        deployment: dict[str, Any] = answer(client.post("/v1/deployments", json=body))
        return wait_for_deployment(client, deployment, timeout) if wait else deployment

    deployment = call_api(command, api_url, home, work)
    if as_json:
        click.echo(json.dumps(deployment, indent=2))
    else:
        click.echo(_describe(deployment))
    if deployment["status"] == "failed":
        click.echo(f"forge {command}: the deployment failed: {deployment['error']}", err=True)
        sys.exit(1)


def _describe(d: dict[str, Any]) -> str:
    where = f"release {d['release_number']} of {d['repository']}/{d['project']} in {d['environment']}"
    commit = f" (gitops commit {d['gitops_commit'][:12]})" if d.get("gitops_commit") else ""
    return f"deployment {d['id']}: {where}: {d['status']}{commit}"

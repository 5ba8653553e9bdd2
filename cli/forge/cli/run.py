"""``forge run PATH``: run a pipeline on the embedded platform with a live view of its DAG.

Exit codes: 0 the run succeeded, 1 it failed (the first failing step's log tail goes to stderr)
or something else went wrong (a one-line reason, never a traceback), 2 the repository's
configuration is invalid.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from forge.cli.api_client import api_client
from forge.cli.deploy import print_run_deployments
from forge.cli.dev import HOME_OPTION
from forge.cli.localrepo import local_source
from forge.cli.platform import PlatformUnhealthyError, platform_down, platform_up
from forge.cli.progress import RunView
from forge.cli.sse import Event, stream_events
from forge.errors import ForgeError, ServiceUnavailableError

__all__ = ["run"]

_FINAL = {"success", "failed", "cancelled", "skipped"}


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rev", help="Revision to run (a git repository's HEAD by default)")
@click.option("--base", help="Revision to compute the affected set against (the first parent by default)")
@click.option("--all", "run_all", is_flag=True, help="Run every project (no base: nothing is compared)")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON on stdout")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for the run")
@HOME_OPTION
def run(
    path: Path, rev: str | None, base: str | None, run_all: bool, as_json: bool, timeout: float, home: Path
) -> None:
    """Run a pipeline for the repository at PATH on the embedded platform."""
    try:
        platform, started = platform_up(home, on_start=lambda n: click.echo(f"starting {n}", err=True))
    except PlatformUnhealthyError as exc:  # someone else's platform: reported, never stopped
        click.echo(f"forge run: {exc}", err=True)
        sys.exit(1)
    except ForgeError as exc:
        click.echo(f"forge run: cannot start the embedded platform: {exc}", err=True)
        sys.exit(1)
    try:
        code = _run(platform.api_url, path, home, rev, base, run_all, as_json, timeout)
    finally:
        if started:
            platform_down(home)
            click.echo("the embedded platform was stopped again; `forge dev up` keeps it running", err=True)
    sys.exit(code)


def _run(
    api: str, path: Path, home: Path, rev: str | None, base: str | None, run_all: bool, as_json: bool, timeout: float
) -> int:
    try:
        source = local_source(path, home, rev=rev, base=base)
        if run_all:
            source = dataclasses.replace(source, base=None)
        with api_client(api, home) as client:
            _call(client, "POST", "/v1/repositories", {"name": source.name, "clone_url": source.clone_url})
            body = {
                "repository": source.name,
                "commit_sha": source.commit,
                "base_sha": source.base,
                "branch": source.branch,
                "trigger": "manual",
                "triggered_by": getpass.getuser(),
            }
            created = _call(client, "POST", "/v1/runs", body)
            run_url = f"{api}/v1/runs/{created['id']}"
            click.echo(f"run {created['id']}: {run_url}", err=True)
            events = _RunEvents(client, created["id"], time.monotonic() + timeout)
            updates = events.updates()
            run = _wait(client, updates, created["id"], timeout)
            if run["discovery_status"] != "success":
                click.echo(run.get("error") or f"discovery {run['discovery_status']}", err=True)
                return 2 if run.get("error_code") == "invalid_config" else 1
            if not as_json:
                _print_discovery(run["discovery"])
            events.deadline = time.monotonic() + timeout
            run, executions = _follow(client, events, updates, quiet=as_json)
    except ForgeError as exc:
        click.echo(f"forge run: {exc}", err=True)
        return 1
    if as_json:
        click.echo(json.dumps({"run": run, "executions": executions}, indent=2))
    click.echo(f"run {run['status']}: {run_url}", err=True)
    if not as_json:
        _print_releases(api, home, run["id"])
        print_run_deployments(api, home, run)
    if run["status"] != "success":
        _print_failure(client_url=api, home=home, run=run, executions=executions)
        return 1
    return 0


def _follow(
    client: httpx.Client, events: _RunEvents, updates: Iterator[RunView], *, quiet: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Redraw the run as its events come until it ends (or the deadline); then the run and its
    executions as the API answers them (what ``--json`` prints and a failure report reads)."""
    from rich.console import Console

    from forge.cli.progress import follow_run

    assert events.view is not None  # the discovery ended: the snapshot came first
    console = Console(stderr=True, quiet=quiet)
    views = ((view.run, view.executions) for view in itertools.chain([events.view], updates))
    follow_run(views, console=console)
    run_id = events.view.run["id"]
    return _call(client, "GET", f"/v1/runs/{run_id}"), _call(client, "GET", f"/v1/runs/{run_id}/executions")


#: Seconds without a byte before a watch reconnects (the API sends a keep-alive every 15 s).
_READ_TIMEOUT = 40.0


class _RunEvents:
    """The run's view after each batch of events of ``GET /v1/runs/{id}/events``, until the run ends or
    ``deadline`` (``time.monotonic()``) passes; a broken or silent stream is resumed with Last-Event-ID."""

    def __init__(self, client: httpx.Client, run_id: str, deadline: float) -> None:
        self._client = client
        self._path = f"/v1/runs/{run_id}/events"
        self.deadline = deadline
        self.view: RunView | None = None
        self._last_id: str | None = None
        self._ended = False

    def updates(self) -> Iterator[RunView]:
        failures = 0
        while not self._ended and time.monotonic() < self.deadline:
            resume = self._last_id if self.view is not None else None
            read = max(0.1, min(self.deadline - time.monotonic(), _READ_TIMEOUT))
            try:
                for events, last_id in stream_events(self._client, self._path, last_id=resume, read_timeout=read):
                    for event in events:
                        self._apply(event)
                    self._last_id = last_id
                    failures = 0
                    if self.view is not None:
                        yield self.view
                    if self._ended or time.monotonic() >= self.deadline:
                        return
            except httpx.ReadTimeout:
                continue  # silent for too long: resume (or stop at the deadline)
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    raise ServiceUnavailableError(f"the API at {self._client.base_url} did not answer: {exc}") from None
                time.sleep(min(0.1 * 2**failures, 2.0))

    def _apply(self, event: Event) -> None:
        if event.event == "snapshot":
            data = event.json()
            self.view = RunView(data["run"], data["executions"])
        elif event.event == "change" and self.view is not None:
            self.view.apply(event.json())
        elif event.event == "end":
            self._ended = True


def _print_failure(*, client_url: str, home: Path, run: dict[str, Any], executions: dict[str, Any]) -> None:
    if run.get("error"):
        click.echo(run["error"], err=True)
    failed = [
        (phase["name"], task["project"], step)
        for phase in sorted(executions.get("phases", []), key=lambda p: (p["group"], p["name"]))
        for task in phase["tasks"]
        for step in task["steps"]
        if step["status"] == "failed"
    ]
    if not failed:
        return
    phase, project, step = failed[0]
    click.echo(f"first failing step: {phase}/{project}/{step['name']} (exit {step.get('exit_code')})", err=True)
    with api_client(client_url, home) as client:
        try:
            logs = _call(client, "GET", f"/v1/runs/{run['id']}/steps/{step['id']}/logs")
        except ForgeError as exc:
            click.echo(f"(no log: {exc})", err=True)
            return
        from forge.cli.logs import log_tail  # only a failed run needs it

        tail = log_tail(logs, 40).splitlines()  # reads the log's last 64 KiB, never the whole log
    click.echo("--- log tail ---", err=True)
    for line in tail:
        click.echo(line, err=True)


def _call(client: httpx.Client, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        response = client.request(method, url, json=body)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"the API at {client.base_url} did not answer: {exc}") from None
    if response.status_code >= 400:
        detail = response.json().get("detail", response.text) if response.content else response.reason_phrase
        raise ForgeError(f"{method} {url}: {response.status_code}: {detail}")
    data: dict[str, Any] = response.json()
    return data


def _wait(client: httpx.Client, updates: Iterator[RunView], run_id: str, timeout: float) -> dict[str, Any]:
    """Follow the run's events until its discovery ended; then the run (with its discovery)."""
    if not any(view.run["discovery_status"] in _FINAL for view in updates):
        raise ForgeError(f"run {run_id} did not finish discovery within {timeout:.0f}s")
    return _call(client, "GET", f"/v1/runs/{run_id}")


def _print_releases(api: str, home: Path, run_id: str) -> None:
    """The releases the run made (recorded before its release steps' outcomes, so all are listed)."""
    try:
        with api_client(api, home) as client:
            page = _call(client, "GET", f"/v1/releases?run_id={run_id}&limit=500")
    except ForgeError as exc:
        click.echo(f"releases of the run could not be listed: {exc}", err=True)
        return
    for release in page["items"]:
        click.echo(
            f"released {release['project']} #{release['number']}: {release['oci_ref']}"
            f" (forge release show {release['repository']} {release['project']} {release['number']})",
            err=True,
        )


def _print_discovery(discovery: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    order = [phase for group in discovery["phase_groups"] for phase in group["phases"]]
    affected = {a["project"]: a["reasons"] for a in discovery["affected"]}
    base = (discovery["base"] or "none")[:12]
    table = Table(title=f"commit {discovery['commit'][:12]} (base {base})")
    for column in ("project", "path", "steps by phase", "affected because"):
        table.add_column(column)
    for project in discovery["projects"]:
        phases = sorted(project["phases"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        steps = "\n".join(f"{phase}: {', '.join(names)}" for phase, names in phases)
        reasons = "\n".join(affected.get(project["name"], ["not affected"]))
        table.add_row(project["name"], project["path"], escape(steps), escape(reasons))
    console.print(table)
    groups = " -> ".join(f"{g['group']}: {', '.join(g['phases'])}" for g in discovery["phase_groups"])
    console.print(f"phase groups: {escape(groups) or '(nothing affected)'}")
    releases = "; ".join(f"{r['project']} ({r['reason']})" for r in discovery.get("releases", []))
    console.print(f"releases: {escape(releases) or 'none'}")

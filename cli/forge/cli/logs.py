"""``forge logs RUN [STEP] [-f]``: print (or follow) step logs of a run from the API.

STEP is a step id or ``phase/project/step``; without it every step's log is printed in DAG order
(each under a ``==> phase/project/step <==`` header on stderr). The API is ``--api``, else
``FORGE_API_URL``, else the one a ``forge login`` saved, else the running embedded platform's (``--home``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from forge.cli.api_client import API_OPTION, api_client
from forge.cli.dev import HOME_OPTION
from forge.cli.sse import Event, stream_events
from forge.errors import ForgeError, NotFoundError

__all__ = ["log_tail", "logs"]

#: What ``log_tail`` reads of a stored log at most: enough for its lines unless they are very long.
TAIL_BYTES = 64 * 1024


@click.command()
@click.argument("run_id")
@click.argument("step", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows, until the step ends")
@API_OPTION
@HOME_OPTION
def logs(run_id: str, step: str | None, follow: bool, api_url: str | None, home: Path) -> None:
    """Print the logs of a run's steps."""
    try:
        with api_client(api_url, home) as client:
            steps = _steps(client, run_id)
            chosen = steps if step is None else [_pick(steps, step)]
            for label, step_id in chosen:
                if step is None:
                    click.echo(f"==> {label} <==", err=True)
                _print_log(client, run_id, step_id, follow=follow)
    except ForgeError as exc:
        click.echo(f"forge logs: {exc}", err=True)
        sys.exit(1)
    except httpx.HTTPError as exc:
        click.echo(f"forge logs: the API did not answer: {exc}", err=True)
        sys.exit(1)


def log_tail(body: dict[str, Any], lines: int, *, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``lines`` lines of a log answer of ``GET .../logs``: of a complete log only its last
    ``max_bytes`` are fetched (an HTTP range of the presigned URL), never the whole object."""
    if not body.get("complete"):
        text = str(body.get("content") or "")[-max_bytes:]
    else:
        tail = _tail(body["url"], max_bytes, {"Range": f"bytes=-{max_bytes}"})
        if tail is None:  # 416: some S3 servers (rclone) refuse a suffix range longer than the object
            tail = _tail(body["url"], max_bytes, {}) or bytearray()
        text = tail.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _tail(url: str, max_bytes: int, headers: dict[str, str]) -> bytearray | None:
    """The last ``max_bytes`` of what ``GET url`` answers (a rolling tail: a server ignoring Range sends it
    all); None for 416."""
    tail = bytearray()
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        if response.status_code == 416:
            return None
        response.raise_for_status()
        for chunk in response.iter_bytes():
            tail += chunk
            del tail[:-max_bytes]
    return tail


def _steps(client: httpx.Client, run_id: str) -> list[tuple[str, str]]:
    response = client.get(f"/v1/runs/{run_id}/executions")
    if response.status_code == 404:
        raise NotFoundError(f"no run {run_id}")
    response.raise_for_status()
    phases = sorted(response.json()["phases"], key=lambda p: (p["group"], p["name"]))
    return [
        (f"{phase['name']}/{task['project']}/{step['name']}", step["id"])
        for phase in phases
        for task in sorted(phase["tasks"], key=lambda t: t["project"])
        for step in task["steps"]
    ]


def _pick(steps: list[tuple[str, str]], wanted: str) -> tuple[str, str]:
    for label, step_id in steps:
        if wanted in {label, step_id}:
            return label, step_id
    known = ", ".join(label for label, _ in steps) or "none"
    raise NotFoundError(f"the run has no step {wanted!r} (steps: {known})")


def _print_log(client: httpx.Client, run_id: str, step_id: str, *, follow: bool) -> None:
    url = f"/v1/runs/{run_id}/steps/{step_id}/logs"
    if not follow:
        response = client.get(url)
        if response.status_code == 404:
            click.echo("(no log yet)", err=True)
            return
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if not body["complete"]:
            click.echo(body["content"], nl=False)
            return
        out = sys.stdout.buffer
        with httpx.stream("GET", body["url"], timeout=30) as stored:  # chunk by chunk: never whole in memory
            stored.raise_for_status()
            for data in stored.iter_bytes():
                out.write(data)
        out.flush()
        return
    known: str | None = None
    while True:  # the step may not have started yet: wait for it on the run's event stream
        with client.stream("GET", url, params={"follow": "true"}, timeout=None) as response:
            if response.status_code != 404:
                response.raise_for_status()
                for chunk in response.iter_text():
                    click.echo(chunk, nl=False)
                return
        status = _step_moved(client, run_id, step_id, known)
        if status in _FINAL and known in _FINAL:
            click.echo("(no log)", err=True)
            return
        known = status


_FINAL = {"success", "failed", "cancelled", "skipped"}
#: A running step's first log part is written within a second or so of its start.
_LOG_PATIENCE = 2.0


def _step_moved(client: httpx.Client, run_id: str, step_id: str, known: str | None) -> str:
    """The step's status once it is not ``known`` any more (at once when it already is not): read from
    ``GET /v1/runs/{id}/events``. A running or final step is waited for at most ``_LOG_PATIENCE``
    seconds (its log may just not be written yet), a pending one for as long as it takes."""
    status: str | None = None
    deadline = time.monotonic() + _LOG_PATIENCE
    last_id: str | None = None
    while True:
        patient = status is not None and status != "pending"
        read = max(0.1, deadline - time.monotonic()) if patient else 40.0
        try:
            stream = stream_events(client, f"/v1/runs/{run_id}/events", last_id=last_id, read_timeout=read)
            for events, seen in stream:
                last_id = seen  # a reconnect resumes after it
                for event in events:
                    status = _status_of(event, step_id, status)
                    if status is not None and status != known:
                        return status
                    if event.event == "end":
                        return status or "skipped"
                if status is not None and status != "pending" and time.monotonic() >= deadline:
                    return status
        except httpx.ReadTimeout:
            if status is not None and status != "pending" and time.monotonic() >= deadline:
                return status


def _status_of(event: Event, step_id: str, status: str | None) -> str | None:
    """The step's status after ``event`` (a snapshot or a change of it), else ``status``."""
    if event.event == "snapshot":
        for phase in event.json()["executions"]["phases"]:
            for task in phase["tasks"]:
                for step in task["steps"]:
                    if step["id"] == step_id:
                        return str(step["status"])
    elif event.event == "change":
        change = event.json()
        if change["entity_id"] == step_id:
            return str(change["status"])
    return status

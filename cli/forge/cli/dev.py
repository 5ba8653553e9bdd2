"""``forge dev up|down|status``: the embedded platform."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from forge.cli.platform import (
    HEALTHY,
    Platform,
    PlatformUnhealthyError,
    describe,
    platform_down,
    platform_health,
    platform_up,
)
from forge.errors import ForgeError

__all__ = ["dev"]

HOME_OPTION = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".forge-dev"),
    envvar="FORGE_DEV_HOME",
    show_default=True,
    help="Where service data, logs and state live",
)


@click.group()
def dev() -> None:
    """Start, stop and inspect the embedded platform."""


@dev.command()
@HOME_OPTION
def up(home: Path) -> None:
    """Start NATS, PostgreSQL, S3, the OCI registry, the API, the controller and the workers; create the GitOps repo."""
    try:
        platform, started = platform_up(
            home,
            on_start=lambda name: click.echo(f"starting {name}", err=True),
            on_note=lambda note: click.echo(f"forge dev up: {note}", err=True),
        )
    except ForgeError as exc:
        click.echo(f"forge dev up: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{'started' if started else 'already running'}: API at {platform.api_url}", err=True)
    click.echo(json.dumps(describe(platform), indent=2))


@dev.command()
@HOME_OPTION
def down(home: Path) -> None:
    """Stop everything `forge dev up` started."""
    stopped = platform_down(home)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}", err=True)


@dev.command()
@HOME_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the platform and each service's health as JSON")
def status(home: Path, as_json: bool) -> None:
    """Show each service's health; exit 0 when all answer, 1 when one is down or nothing runs."""
    try:
        platform = Platform.load(home)
    except ForgeError as exc:
        click.echo(f"forge dev status: {exc}", err=True)
        sys.exit(1)
    if platform is None or not platform.alive():
        click.echo("not running", err=True)
        sys.exit(1)
    health = platform_health(platform)
    if as_json:
        click.echo(json.dumps(describe(platform) | {"health": health}, indent=2))
    else:
        click.echo(f"API at {platform.api_url}, state in {home}", err=True)
        for name, state in health.items():
            click.echo(f"{name:<18} {platform.services.get(name, '-'):<22} {state}")
    down = {name: state for name, state in health.items() if state != HEALTHY}
    if down:
        click.echo(f"forge dev status: {PlatformUnhealthyError(home, down)}", err=True)
        sys.exit(1)

"""``forge dev up|down|status``: the embedded platform."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from forge.cli.platform import describe, platform_down, platform_up, running_platform
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
    """Start NATS, PostgreSQL, S3, the API, the controller and the workers."""
    try:
        platform, started = platform_up(home, on_start=lambda name: click.echo(f"starting {name}", err=True))
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
def status(home: Path) -> None:
    """Print the running platform as JSON; exit 1 when none runs."""
    platform = running_platform(home)
    if platform is None:
        click.echo("not running", err=True)
        sys.exit(1)
    click.echo(json.dumps(describe(platform), indent=2))

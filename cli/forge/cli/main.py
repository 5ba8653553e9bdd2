"""The ``forge`` command. Subcommands import lazily so ``forge --help`` starts fast."""

from __future__ import annotations

import importlib
import sys

import click

__all__ = ["cli", "main"]

_COMMANDS: dict[str, tuple[str, str, str]] = {
    "approve": ("forge.cli.deploy", "approve", "Approve a release for an environment"),
    "deploy": ("forge.cli.deploy", "deploy", "Deploy a release to an environment"),
    "promote": ("forge.cli.deploy", "promote", "Deploy what is active in one environment to another"),
    "rollback": ("forge.cli.deploy", "rollback", "Deploy an earlier release to an environment"),
    "discover": ("forge.cli.discover", "discover", "Discover projects and the affected set of a local repo"),
    "schema": ("forge.cli.schema", "schema", "Write the JSON Schemas of the configuration files"),
    "dev": ("forge.cli.dev", "dev", "Start, stop and inspect the embedded platform"),
    "login": ("forge.cli.login", "login", "Log in to a Forge API (device authorization grant); saves the token"),
    "logs": ("forge.cli.logs", "logs", "Print or follow the step logs of a run"),
    "release": ("forge.cli.release", "release", "List, show and request releases"),
    "run": ("forge.cli.run", "run", "Run a pipeline for a local repository on the embedded platform"),
    "runs": ("forge.cli.runs", "runs", "List, show and cancel pipeline runs"),
    "template": ("forge.cli.template", "template", "Print the Argo WorkflowTemplate of a local repository"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="catalyst-forge")
def cli() -> None:
    """Catalyst Forge: GitOps-native CI/CD and releases for monorepos."""


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))

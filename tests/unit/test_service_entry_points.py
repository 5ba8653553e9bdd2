"""The long-running services' entry points answer ``--help`` and fail to start in one line, never a traceback.

Each case runs the installed console script as an operator would (a fresh process, an environment of
its own); nothing here needs a running service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SERVICES = ["forge-api", "forge-controller", "forge-worker"]


def _run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FORGE_", "OTEL_"))}
    return subprocess.run(
        [str(BIN / script), *args],
        env={**clean, "FORGE_METRICS__PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("script", SERVICES)
def test_help_reads_no_environment_and_names_the_settings(script: str) -> None:
    # a variable that does not parse: --help must not even read it
    done = _run(script, "--help", FORGE_API__PORT="not-a-port")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
    assert "FORGE_* environment variables (docs/configuration.md)" in done.stdout


@pytest.mark.parametrize("script", SERVICES)
def test_a_setting_that_does_not_parse_is_named_in_one_line(script: str) -> None:
    args = ["ci"] if script == "forge-worker" else []
    done = _run(script, *args, FORGE_API__PORT="not-a-port", FORGE_AUTH__ISSUER="https://issuer.example")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    expected = f"{script}: FORGE_API__PORT: Input should be a valid integer, unable to parse string as an integer"
    assert done.stderr.strip().splitlines() == [f"{expected} (got 'not-a-port')"]


def test_an_unreachable_database_at_start_up_is_one_line_and_exit_1() -> None:
    # port 1 on the loopback: connection refused at once
    done = _run("forge-controller", FORGE_DATABASE__URL="postgresql://forge@127.0.0.1:1/forge")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert "connecting to PostgreSQL: PostgreSQL is unavailable" in line
    assert "127.0.0.1" in line

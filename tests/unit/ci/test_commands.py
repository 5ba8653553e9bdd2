"""How run and earthly steps become argv."""

from __future__ import annotations

import subprocess

from forge.workflows.workers.executors import earthly_argv, run_argv


def test_run_appends_each_arg_as_one_quoted_word() -> None:
    argv = run_argv("printf '%s|'", ["a b", "$HOME", "it's", "; rm -rf /"])
    assert argv[:2] == ["/bin/sh", "-c"]
    out = subprocess.run(argv, capture_output=True, check=True, env={"HOME": "/nowhere"}).stdout
    assert out == b"a b|$HOME|it's|; rm -rf /|"


def test_run_target_is_a_command_line() -> None:
    assert run_argv("make test && echo ok", []) == ["/bin/sh", "-c", "make test && echo ok"]


def test_earthly_names_secrets_without_values_and_prefixes_the_target() -> None:
    argv = earthly_argv("/bin/earthly", "build", ["--VERSION=1"], secrets=["NPM_TOKEN"], flags=["--ci"])
    assert argv == ["/bin/earthly", "--ci", "--secret", "NPM_TOKEN", "+build", "--VERSION=1"]


def test_earthly_keeps_a_target_reference() -> None:
    assert earthly_argv("earthly", "./sub+test", [], secrets=[], flags=[]) == ["earthly", "./sub+test"]

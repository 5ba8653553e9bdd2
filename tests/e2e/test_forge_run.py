"""``forge run`` as a user runs it: the real CLI starts the embedded platform, runs, and stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pygit2

from forge.embedded.process import binary

PASSING = "name: ok\nphases:\n  test:\n    steps:\n      - {name: unit, run: 'echo all good'}\n"
FAILING = (
    "name: bad\nphases:\n  check:\n    steps:\n"
    "      - {name: lint, run: 'echo line one; echo the reason it broke; exit 4'}\n"
)


def _git_repo(path: Path, files: dict[str, str]) -> None:
    repo = pygit2.init_repository(str(path), initial_head="main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("t", "t@example.invalid")
    repo.create_commit("HEAD", sig, sig, "init", repo.index.write_tree(), [])


def _forge_run(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("forge"), "run", str(path), "--home", str(home), "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home)},
    )


def test_forge_run_exit_codes_and_log_tail(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good, bad, broken = tmp_path / "good", tmp_path / "bad", tmp_path / "broken"
    _git_repo(good, {"ok/.forge/project.yaml": PASSING})
    _git_repo(bad, {"bad/.forge/project.yaml": FAILING})
    _git_repo(broken, {"x/.forge/project.yaml": "name: x\nphases:\n  nope:\n    steps: [{name: a, run: 'true'}]\n"})

    passed = _forge_run(good, home)
    assert passed.returncode == 0, passed.stderr
    assert "run success" in passed.stderr
    assert "no base: all" in passed.stdout

    failed = _forge_run(bad, home)
    assert failed.returncode == 1, failed.stderr
    assert "first failing step: check/bad/lint (exit 4)" in failed.stderr
    assert "the reason it broke" in failed.stderr.split("--- log tail ---")[1]

    invalid = _forge_run(broken, home)
    assert invalid.returncode == 2, invalid.stderr
    assert "x/.forge/project.yaml:3: phases.nope" in invalid.stderr
    assert "Traceback" not in invalid.stderr + failed.stderr + passed.stderr
    assert not (home / "platform.json").exists()  # each run stopped the platform it started

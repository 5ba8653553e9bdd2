"""``forge template`` through click's CliRunner: YAML on stdout, talk and exit codes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from ruamel.yaml import YAML

from forge.cli.template import template
from forge.testing.gitrepos import commit_files
from forge.workflows.templates import validate_workflow_template

LIB = "name: lib\nphases:\n  build:\n    steps:\n      - {name: compile, run: make, retries: 2}\n"
APP = "name: app\ndepends_on: [lib]\nphases:\n  test:\n    steps:\n      - {name: unit, run: pytest}\n"


def test_prints_a_valid_template(tmp_path: Path) -> None:
    repo = tmp_path / "mono.git"
    first = commit_files(repo, {"lib/.forge/project.yaml": LIB, "app/.forge/project.yaml": APP, "lib/x.py": "1"})
    commit_files(repo, {"app/x.py": "2"})
    result = CliRunner().invoke(template, [str(repo)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = YAML(typ="safe").load(result.stdout)
    validate_workflow_template(doc)
    assert doc["metadata"]["name"].startswith("forge-run-")
    groups = [t for t in doc["spec"]["templates"] if t["name"].startswith("group-")]
    tasks = [task["name"] for group in groups for task in group["dag"]["tasks"]]
    assert tasks == ["test-app-unit"]  # only app changed
    again = CliRunner().invoke(template, [str(repo)])
    assert again.stdout == result.stdout  # deterministic placeholder ids
    everything = CliRunner().invoke(template, [str(repo), "--rev", first])
    tasks = [t["name"] for t in YAML(typ="safe").load(everything.stdout)["spec"]["templates"] if "dag" in t]
    assert tasks == ["main", "group-1", "group-2"]
    params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    assert params["repository"] == "local/mono"
    assert params["branch"] == "main"


def test_nothing_affected_prints_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    commit_files(repo, {"lib/.forge/project.yaml": LIB})
    commit_files(repo, {"README.md": "hi"})
    result = CliRunner().invoke(template, [str(repo)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no affected project has a step" in result.stderr


def test_invalid_config_exits_2_with_file_line_field(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    commit_files(repo, {"lib/.forge/project.yaml": "name: lib\nphases:\n  build:\n    steps:\n      - {name: x}\n"})
    result = CliRunner().invoke(template, [str(repo)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("lib/.forge/project.yaml:5: ")


def test_not_a_repository_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(template, [str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("forge template: not a git repository")
    missing = CliRunner().invoke(template, [str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert "no such directory" in missing.stderr

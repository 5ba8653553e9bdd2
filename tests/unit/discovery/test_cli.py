"""``forge discover`` through click's CliRunner: exit codes, stdout/stderr split, JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from forge.cli.discover import discover
from forge.testing.gitrepos import commit_files

LIB = "name: lib\nphases:\n  build:\n    steps:\n      - {name: compile, run: make}\n"
APP = "name: app\ndepends_on: [lib]\nphases:\n  test:\n    steps:\n      - {name: unit, run: pytest}\n"


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "repo.git"
    first = commit_files(repo, {"lib/.forge/project.yaml": LIB, "app/.forge/project.yaml": APP, "lib/x.py": "1"})
    second = commit_files(repo, {"lib/x.py": "2"})
    return repo, first, second


def test_json_output_with_default_base_first_parent(tmp_path: Path) -> None:
    repo, first, second = _repo(tmp_path)
    result = CliRunner().invoke(discover, [str(repo), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert data["commit"] == second
    assert data["base"] == first
    assert data["branch"] == "main"
    assert [(p["name"], p["path"], p["depends_on"], p["phases"]) for p in data["projects"]] == [
        ("app", "app", ["lib"], {"test": ["unit"]}),
        ("lib", "lib", [], {"build": ["compile"]}),
    ]
    assert data["affected"] == [
        {"project": "app", "reasons": ["depends_on: lib"]},
        {"project": "lib", "reasons": ["changed: lib/x.py"]},
    ]
    assert data["phase_groups"] == [{"group": 1, "phases": ["build"]}, {"group": 2, "phases": ["test"]}]


def test_root_commit_and_no_base_affect_everything(tmp_path: Path) -> None:
    repo, first, _ = _repo(tmp_path)
    for args in (["--rev", first], ["--no-base"]):
        result = CliRunner().invoke(discover, [str(repo), "--json", *args])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["base"] is None
        assert {a["project"]: a["reasons"] for a in data["affected"]} == {
            "app": ["no base: all"],
            "lib": ["no base: all"],
        }


def test_human_summary_from_a_work_tree(tmp_path: Path) -> None:
    bare, first, _ = _repo(tmp_path)
    work = tmp_path / "work"
    pygit2.clone_repository(str(bare), str(work))
    result = CliRunner().invoke(discover, [str(work), "--base", first])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith("branch main): 2 projects, 2 affected, 1 changed files")
    assert lines[1:] == [
        "affected:",
        "  app  depends_on: lib",
        "  lib  changed: lib/x.py",
        "phase groups:",
        "  1: build",
        "  2: test",
        "releases: none",
    ]


def test_config_errors_exit_2_with_every_issue(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    commit_files(repo, {"a/.forge/project.yaml": "name: a\ndepends_on: [zz]\n", "b/.forge/project.yaml": "nme: b\n"})
    result = CliRunner().invoke(discover, [str(repo)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "a/.forge/project.yaml:2: depends_on.0: unknown project 'zz'",
        "b/.forge/project.yaml:1: name: Field required",
        "b/.forge/project.yaml:1: nme: Extra inputs are not permitted",
    ]
    as_json = CliRunner().invoke(discover, [str(repo), "--json"])
    assert as_json.exit_code == 2
    errors = json.loads(as_json.stdout)["errors"]
    assert errors[0] == {
        "file": "a/.forge/project.yaml",
        "line": 2,
        "field": "depends_on.0",
        "reason": "unknown project 'zz'",
        "message": "a/.forge/project.yaml:2: depends_on.0: unknown project 'zz'",
    }
    assert len(errors) == 3


def test_other_failures_exit_1_with_one_line(tmp_path: Path) -> None:
    repo, _, _ = _repo(tmp_path)
    for args, message in [
        ([str(tmp_path / "missing")], "forge discover: no such directory: "),
        ([str(tmp_path)], "forge discover: not a git repository: "),
        ([str(repo), "--rev", "nope"], "forge discover: unknown revision 'nope'"),
    ]:
        result = CliRunner().invoke(discover, args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(message), result.stderr
        assert "Traceback" not in result.stderr


def test_disk_cache_is_reused_and_a_corrupt_one_ignored(tmp_path: Path) -> None:
    repo, _, _ = _repo(tmp_path)
    cache_file = tmp_path / "xdg-cache" / "forge" / "discovery-cache.json"
    first = CliRunner().invoke(discover, [str(repo), "--json"])
    assert first.exit_code == 0, first.output
    saved = json.loads(cache_file.read_text())
    assert saved["version"] == 2
    assert len(saved["configs"]) == 2
    stamp = cache_file.stat().st_mtime_ns
    again = CliRunner().invoke(discover, [str(repo), "--json"])
    assert again.stdout == first.stdout
    assert cache_file.stat().st_mtime_ns == stamp  # nothing new parsed or walked: not rewritten
    cache_file.write_text("{not json")
    corrupt = CliRunner().invoke(discover, [str(repo), "--json"])
    assert corrupt.exit_code == 0
    assert corrupt.stdout == first.stdout
    assert json.loads(cache_file.read_text())["version"] == 2
    skipped = CliRunner().invoke(discover, [str(repo), "--no-cache", "--cache-dir", str(tmp_path / "unused")])
    assert skipped.exit_code == 0
    assert not (tmp_path / "unused").exists()


def test_a_sub_folder_of_a_work_tree_is_discovered_as_its_own_repository(tmp_path: Path) -> None:
    work = tmp_path / "work"
    files = {
        "mono/.forge/repo.yaml": "affects_all: [shared.txt]\n",
        "mono/lib/.forge/project.yaml": LIB,
        "mono/shared.txt": "1",
        "outside/.forge/project.yaml": APP.replace("depends_on: [lib]\n", ""),
    }
    repo = pygit2.init_repository(str(work), initial_head="main")
    sig = pygit2.Signature("t", "t@example.invalid")
    parent: list[pygit2.Oid] = []
    for change in (files, {"outside/x.txt": "changed outside mono"}, {"mono/shared.txt": "2"}):
        for name, text in change.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        repo.index.add_all()
        repo.index.write()
        parent = [repo.create_commit("HEAD", sig, sig, "c", repo.index.write_tree(), parent)]

    outside_change = CliRunner().invoke(discover, [str(work / "mono"), "--rev", "HEAD~1", "--json"])
    assert outside_change.exit_code == 0, outside_change.output
    data = json.loads(outside_change.stdout)
    assert [(p["name"], p["path"]) for p in data["projects"]] == [("lib", "lib")]
    assert data["affected"] == []

    inside_change = CliRunner().invoke(discover, [str(work / "mono"), "--json"])
    assert json.loads(inside_change.stdout)["affected"] == [{"project": "lib", "reasons": ["affects_all: shared.txt"]}]


def test_release_intents_are_shown_for_the_branch_or_the_tag(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    released = APP + "release:\n  on: [{branch: main}, {tag: true}]\n"
    commit_files(repo, {"lib/.forge/project.yaml": LIB, "app/.forge/project.yaml": released})
    on_main = CliRunner().invoke(discover, [str(repo)])
    assert on_main.exit_code == 0, on_main.output
    assert on_main.stdout.splitlines()[-2:] == ["releases:", "  app  branch main matches main"]
    tagged = CliRunner().invoke(discover, [str(repo), "--tag", "app/v2.0.0", "--json"])
    assert tagged.exit_code == 0, tagged.output
    data = json.loads(tagged.stdout)
    assert (data["branch"], data["tag"]) == (None, "app/v2.0.0")
    assert data["releases"] == [
        {
            "project": "app",
            "trigger": "tag",
            "reason": "tag app/v2.0.0 (monorepo tagging)",
            "branch": None,
            "tag": "app/v2.0.0",
        }
    ]
    assert data["phase_groups"][-1] == {"group": 3, "phases": ["release"]}
    other = CliRunner().invoke(discover, [str(repo), "--branch", "dev"])
    assert other.stdout.splitlines()[-1] == "releases: none"

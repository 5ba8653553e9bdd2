"""Discovery against real git repositories built with pygit2 in temp dirs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forge.adapters.pygit2_git import Pygit2Reader
from forge.discovery import ConfigCache, discover
from forge.errors import ConfigError, NotFoundError
from forge.testing.gitrepos import Content, Symlink, commit_files

REPO_YAML = """\
name: acme/mono
affects_all: [uv.lock, ".github/**"]
phases:
  check: {group: 1}
  build: {group: 1, timeout: 10m}
  test: {group: 2}
  package: {group: 3}
"""
CORE = """\
name: core
phases:
  build:
    steps:
      - name: compile
        run: make
"""
API = """\
name: api
depends_on: [core]
paths: ["docs/api/**"]
release:
  on:
    - branch: "main|release/.*"
phases:
  test:
    steps:
      - name: unit
        run: pytest
        timeout: 5m
      - name: lint
        earthly: +lint
  build:
    steps:
      - name: image
        run: docker build .
"""
WEB = """\
name: web
depends_on: [api]
phases:
  package:
    steps:
      - name: bundle
        run: npm pack
"""
DOCS = "name: docs\n"
BASE_FILES: dict[str, Content] = {
    ".forge/repo.yaml": REPO_YAML,
    "libs/core/.forge/project.yaml": CORE,
    "libs/core/src/core.py": "x = 1\n",
    "services/api/.forge/project.yaml": API,
    "services/api/main.py": "print()\n",
    "services/web/.forge/project.yaml": WEB,
    "docs/.forge/project.yaml": DOCS,
    "docs/index.md": "# docs\n",
    "uv.lock": "lock\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo.git"


def _errors(repo: Path, files: dict[str, Content], *, base_files: dict[str, Content] | None = None) -> list[str]:
    commit = commit_files(repo, {**(BASE_FILES if base_files is None else base_files), **files})
    with pytest.raises(ConfigError) as caught:
        discover(Pygit2Reader(repo), commit, None)
    return [str(issue) for issue in caught.value.issues]


def test_valid_monorepo(repo: Path) -> None:
    first = commit_files(repo, BASE_FILES)
    second = commit_files(repo, {"libs/core/src/core.py": "x = 2\n"})
    result = discover(Pygit2Reader(repo), second, first, branch="main")

    assert result.commit == second
    assert result.base == first
    assert result.repository == "acme/mono"
    assert result.changed_files == 1
    assert [(p.name, p.path) for p in result.projects] == [
        ("api", "services/api"),
        ("core", "libs/core"),
        ("docs", "docs"),
        ("web", "services/web"),
    ]
    api = result.projects[0]
    # api is released on main: its release phase (no artifacts) runs after every other group
    assert api.phases == {"build": ["image"], "test": ["unit", "lint"], "release": ["release"]}
    assert [(s.phase, s.name, s.action, s.target, s.timeout_seconds) for s in api.steps] == [
        ("build", "image", "run", "docker build .", 600),
        ("test", "unit", "run", "pytest", 300),
        ("test", "lint", "earthly", "+lint", 1800),
        ("release", "release", "release", "api", 900),
    ]
    assert [(r.project, r.trigger, r.reason, r.branch) for r in result.releases] == [
        ("api", "push", "branch main matches main|release/.*", "main")
    ]
    assert [(a.project, a.reasons) for a in result.affected] == [
        ("api", ["depends_on: core"]),
        ("core", ["changed: libs/core/src/core.py"]),
        ("web", ["depends_on: api"]),
    ]
    assert [(g.group, g.phases) for g in result.phase_groups] == [
        (1, ["build"]),
        (2, ["test"]),
        (3, ["package"]),
        (4, ["release"]),
    ]


def test_no_base_affects_all_and_release_regex_fullmatch(repo: Path) -> None:
    commit = commit_files(repo, BASE_FILES)
    result = discover(Pygit2Reader(repo), "main", None, branch="release/1.2")
    assert result.commit == commit
    assert [(a.project, a.reasons) for a in result.affected] == [
        (name, ["no base: all"]) for name in ("api", "core", "docs", "web")
    ]
    assert [r.project for r in result.releases] == ["api"]
    assert discover(Pygit2Reader(repo), commit, None, branch="mainline").releases == []


def test_affects_all_paths_glob_and_capped_changed_list(repo: Path) -> None:
    first = commit_files(repo, BASE_FILES)
    changes: dict[str, Content] = {f"docs/page{i}.md": str(i) for i in range(7)}
    changes |= {"uv.lock": "new\n", "docs/api/ref.md": "ref\n"}
    second = commit_files(repo, changes)
    result = discover(Pygit2Reader(repo), second, first)
    reasons = {a.project: a.reasons for a in result.affected}
    assert reasons["docs"] == [
        "affects_all: uv.lock",
        "changed: docs/api/ref.md",
        "changed: docs/page0.md",
        "changed: docs/page1.md",
        "changed: docs/page2.md",
        "changed: docs/page3.md",
        "changed: … and 3 more",
    ]
    assert reasons["api"] == ["affects_all: uv.lock", "depends_on: core", "paths: docs/api/**"]
    assert sorted(reasons) == ["api", "core", "docs", "web"]


def test_exact_messages_for_cross_project_errors(repo: Path) -> None:
    errors = _errors(
        repo,
        {
            "services/web/.forge/project.yaml": "name: web\ndepends_on: [api, nope]\n",
            "services/other/.forge/project.yaml": "name: api\n",
            "libs/core/.forge/project.yaml": "name: core\nphases:\n  deploy:\n    steps:\n      - {name: x, run: y}\n",
        },
    )
    assert errors == [
        (
            "libs/core/.forge/project.yaml:3: phases.deploy: "
            "unknown phase 'deploy'; .forge/repo.yaml declares: build, check, package, test"
        ),
        (
            "services/api/.forge/project.yaml:1: name: duplicate project name 'api' "
            "(also in services/other/.forge/project.yaml)"
        ),
        (
            "services/other/.forge/project.yaml:1: name: duplicate project name 'api' "
            "(also in services/api/.forge/project.yaml)"
        ),
        "services/web/.forge/project.yaml:2: depends_on.1: unknown project 'nope'",
    ]


def test_exact_messages_for_field_errors_collects_every_file(repo: Path) -> None:
    errors = _errors(
        repo,
        {
            "libs/core/.forge/project.yaml": (
                "name: core\nphases:\n  build:\n    steps:\n      - name: compile\n"
                "        run: make\n        retries: 99\n      - name: both\n        run: a\n        earthly: +b\n"
            ),
            "docs/.forge/project.yaml": "name: Docs\ncolour: blue\n",
            ".forge/repo.yaml": "phases:\n  build: {group: 0}\n",
        },
    )
    assert errors == [
        ".forge/repo.yaml:2: phases.build.group: Input should be greater than or equal to 1",
        "docs/.forge/project.yaml:1: name: String should match pattern '^[a-z][a-z0-9-]*$'",
        "docs/.forge/project.yaml:2: colour: Extra inputs are not permitted",
        "libs/core/.forge/project.yaml:7: phases.build.steps.0.retries: Input should be less than or equal to 10",
        "libs/core/.forge/project.yaml:8: phases.build.steps.1: exactly one of 'run' or 'earthly' must be set",
    ]


def test_missing_field_falls_back_to_the_parent_line(repo: Path) -> None:
    errors = _errors(
        repo, {"docs/.forge/project.yaml": "depends_on: []\nphases:\n  build:\n    steps:\n      - run: x\n"}
    )
    assert errors == [
        "docs/.forge/project.yaml:1: name: Field required",
        "docs/.forge/project.yaml:5: phases.build.steps.0.name: Field required",
    ]


def test_dependency_cycle(repo: Path) -> None:
    errors = _errors(
        repo,
        {
            "libs/core/.forge/project.yaml": "name: core\ndepends_on:\n  - web\n",
            "docs/.forge/project.yaml": "name: docs\ndepends_on: [docs]\n",
        },
    )
    assert errors == [
        "docs/.forge/project.yaml:2: depends_on.0: dependency cycle: docs -> docs",
        "services/api/.forge/project.yaml:2: depends_on.0: dependency cycle: api -> core -> web -> api",
    ]


def test_nested_project_symlinks_and_size_limit(repo: Path) -> None:
    errors = _errors(
        repo,
        {
            "services/api/v2/.forge/project.yaml": "name: api-v2\n",
            "tools/.forge/project.yaml": Symlink("../docs/.forge/project.yaml"),
            "big/.forge/project.yaml": b"name: big\n" + b"#" * (1024 * 1024),
            ".forge/repo.yaml": Symlink("../REPO"),
        },
    )
    assert errors == [
        ".forge/repo.yaml: is a symbolic link; configuration must be a regular file",
        "big/.forge/project.yaml: the file is 1048586 bytes; the limit is 262144",
        (
            "services/api/v2/.forge/project.yaml: nested projects are not allowed: "
            "services/api/v2 is inside the project at services/api/.forge/project.yaml"
        ),
        "tools/.forge/project.yaml: is a symbolic link; configuration must be a regular file",
    ]


def test_symlinked_forge_directory(repo: Path) -> None:
    errors = _errors(repo, {"tools/.forge": Symlink("../docs/.forge")})
    assert errors == ["tools/.forge: is a symbolic link; configuration must be a regular file"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("- a\n- b\n", "docs/.forge/project.yaml:1: the document must be a mapping, got a list"),
        ("just text\n", "docs/.forge/project.yaml:1: the document must be a mapping, got a str"),
        ("name: a\nname: b\n", "docs/.forge/project.yaml:2: invalid YAML: while constructing a mapping"),
        ("name: [a\n", "docs/.forge/project.yaml:2: invalid YAML: while parsing a flow sequence"),
        ("x: " + "[" * 5000, "docs/.forge/project.yaml:1: the document nests deeper than 64 levels"),
        ("name: \xff\n", "docs/.forge/project.yaml: not UTF-8 text"),
    ],
)
def test_unparseable_documents(repo: Path, content: str, expected: str) -> None:
    data = content.encode("latin-1") if "\xff" in content else content.encode()
    errors = _errors(repo, {"docs/.forge/project.yaml": data})
    assert len(errors) == 1
    assert errors[0].startswith(expected), errors[0]


def test_alias_bomb_is_rejected_quickly(repo: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    started = time.monotonic()
    errors = _errors(repo, {"docs/.forge/project.yaml": "\n".join(rows) + "\n"})
    assert time.monotonic() - started < 5
    assert errors == [
        "docs/.forge/project.yaml:1: the document expands to more than 100000 nodes (anchors and aliases?)"
    ]


def test_a_one_megabyte_config_is_rejected_without_reading_it(repo: Path) -> None:
    started = time.monotonic()
    errors = _errors(repo, {"docs/.forge/project.yaml": b"name: docs\nx: " + b"[" * (1024 * 1024)})
    assert time.monotonic() - started < 5
    assert errors == ["docs/.forge/project.yaml: the file is 1048590 bytes; the limit is 262144"]


def test_cache_parses_only_changed_blobs_and_skips_unchanged_trees(repo: Path) -> None:
    first = commit_files(repo, BASE_FILES)
    second = commit_files(repo, {"services/web/.forge/project.yaml": WEB + "paths: [x]\n", "docs/index.md": "new"})
    reader = Pygit2Reader(repo)
    cache = ConfigCache()
    discover(reader, first, None, cache=cache)
    assert cache.stats.parses == 5
    walked = cache.stats.tree_walks
    result = discover(reader, second, first, cache=cache)
    assert cache.stats.parses == 6  # only web's new blob
    assert cache.stats.parse_hits == 4
    # root, services, services/web and docs are new trees; libs and everything under it are not
    assert cache.stats.tree_walks - walked == 4
    assert [a.project for a in result.affected] == ["docs", "web"]
    discover(reader, second, first, cache=cache)
    assert cache.stats.parses == 6


def test_unknown_revision(repo: Path) -> None:
    commit_files(repo, BASE_FILES)
    with pytest.raises(NotFoundError, match="unknown revision 'nope'"):
        discover(Pygit2Reader(repo), "nope", None)
    with pytest.raises(NotFoundError):
        discover(Pygit2Reader(repo), "main", "0" * 40)


def test_repository_without_config_files(repo: Path) -> None:
    commit = commit_files(repo, {"README.md": "hi"})
    result = discover(Pygit2Reader(repo), commit, None)
    assert result.projects == []
    assert result.affected == []
    assert result.phase_groups == []

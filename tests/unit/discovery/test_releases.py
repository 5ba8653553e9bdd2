"""Release intents from ``release.on`` and the checks of artifacts and deploy resources, on real git repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge.adapters.pygit2_git import Pygit2Reader
from forge.discovery import discover
from forge.discovery.load import load_config
from forge.domain.config import ProjectConfig
from forge.domain.discovery import DiscoveryResult
from forge.errors import ConfigError
from forge.testing.gitrepos import Content, commit_files

REPO_YAML = "name: acme/mono\ntagging: {strategy: %s}\npublishers:\n  mirror: {type: oci}\n"
API = """\
name: api
release:
  on:
    - branch: main
    - tag: true
    - manual: true
artifacts:
  image:
    type: container
    producer: {run: ./build-image out/image, output: out/image}
    publishers: [oci, mirror]
deploy:
  resources:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api}
      spec:
        template:
          spec:
            containers:
              - name: api
                image: "${{ artifacts.image.ref }}"
"""
WEB = "name: web\nrelease:\n  on:\n    - tag: true\n"
DOCS = "name: docs\n"


def _files(strategy: str = "monorepo") -> dict[str, Content]:
    return {
        ".forge/repo.yaml": REPO_YAML % strategy,
        "services/api/.forge/project.yaml": API,
        "services/web/.forge/project.yaml": WEB,
        "docs/.forge/project.yaml": DOCS,
        "docs/index.md": "# docs\n",
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo.git"


def _intents(result: DiscoveryResult) -> list[tuple[str, str, str]]:
    return [(r.project, r.trigger, r.reason) for r in result.releases]


def _issues(repo: Path, files: dict[str, Content], **kwargs: object) -> list[str]:
    commit = commit_files(repo, files)
    with pytest.raises(ConfigError) as caught:
        discover(Pygit2Reader(repo), commit, None, **kwargs)  # type: ignore[arg-type]
    return [str(issue) for issue in caught.value.issues]


def test_a_branch_rule_releases_affected_projects_only(repo: Path) -> None:
    first = commit_files(repo, _files())
    second = commit_files(repo, {"docs/index.md": "# more docs\n"})
    reader = Pygit2Reader(repo)
    assert _intents(discover(reader, first, None, branch="main")) == [("api", "push", "branch main matches main")]
    assert discover(reader, second, first, branch="main").releases == []  # api is unchanged
    assert discover(reader, first, None, branch="main-2").releases == []  # regexes fully match


def test_monorepo_tags_name_their_project(repo: Path) -> None:
    commit = commit_files(repo, _files())
    reader = Pygit2Reader(repo)
    result = discover(reader, commit, None, tag="web/v1.2.0")
    assert (result.tag, _intents(result)) == ("web/v1.2.0", [("web", "tag", "tag web/v1.2.0 (monorepo tagging)")])
    assert _intents(discover(reader, commit, None, tag="api/v2.0.0-rc.1+build.5"))[0][:2] == ("api", "tag")
    for tag in ("v1.2.0", "web/1.2.0", "web/v1.2", "webx/v1.0.0", "web/v01.0.0"):
        assert discover(reader, commit, None, tag=tag).releases == [], tag


def test_tag_all_releases_every_project_with_a_tag_rule(repo: Path) -> None:
    commit = commit_files(repo, _files("tag-all"))
    reader = Pygit2Reader(repo)
    assert [r.project for r in discover(reader, commit, None, tag="v3.1.4").releases] == ["api", "web"]
    assert discover(reader, commit, None, tag="api/v3.1.4").releases == []


def test_a_manual_request_releases_only_the_requested_project(repo: Path) -> None:
    commit = commit_files(repo, _files())
    result = discover(Pygit2Reader(repo), commit, None, branch="main", requested_releases=["api"])
    assert _intents(result) == [("api", "manual", "manual release requested")]
    assert result.releases[0].branch == "main"


def test_manual_requests_need_a_project_with_a_manual_rule(repo: Path) -> None:
    issues = _issues(repo, _files(), requested_releases=["web", "ghost"])
    assert issues == [
        ".forge: a manual release of 'ghost' was requested, but no project has that name",
        (
            "services/web/.forge/project.yaml:2: release.on: a manual release of 'web' was requested; "
            "add '{manual: true}' to release.on to allow it"
        ),
    ]


def test_artifacts_are_listed_with_their_type(repo: Path) -> None:
    commit = commit_files(repo, _files())
    api = discover(Pygit2Reader(repo), commit, None).projects[0]
    assert [(a.name, a.type) for a in api.artifacts] == [("image", "container")]


def test_unknown_publishers_are_config_errors(repo: Path) -> None:
    files = _files()
    files["services/api/.forge/project.yaml"] = API.replace("[oci, mirror]", "[oci, harbor]")
    assert _issues(repo, files) == [
        (
            "services/api/.forge/project.yaml:11: artifacts.image.publishers.1: unknown publisher 'harbor'; "
            "known: mirror, oci, s3"
        )
    ]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("${{ artifacts.img.ref }}", "img"),
        ("${{ artifacts.image.sha }}", "sha"),
    ],
)
def test_artifact_references_name_known_artifacts_and_fields(repo: Path, expression: str, reason: str) -> None:
    files = _files()
    files["services/api/.forge/project.yaml"] = API.replace("${{ artifacts.image.ref }}", expression)
    (issue,) = _issues(repo, files)
    location = "deploy.resources.0.spec.template.spec.containers.0.image"
    assert issue.startswith(f"services/api/.forge/project.yaml:22: {location}: ")
    assert reason in issue


def test_producer_output_stays_inside_the_project(repo: Path) -> None:
    files = _files()
    files["services/api/.forge/project.yaml"] = API.replace("output: out/image", "output: ../../etc")
    (issue,) = _issues(repo, files)
    assert issue.startswith("services/api/.forge/project.yaml:10: artifacts.image.producer.output: ")
    assert "without '..'" in issue


def test_released_projects_get_the_release_phase_last(repo: Path) -> None:
    commit = commit_files(repo, _files())
    result = discover(Pygit2Reader(repo), commit, None, tag="api/v1.0.0")
    api = result.projects[0]
    assert api.phases["release"] == ["artifact-image", "release"]
    assert [(s.name, s.action, s.target, s.timeout_seconds) for s in api.steps if s.phase == "release"] == [
        ("artifact-image", "artifact", "image", 1200),
        ("release", "release", "api", 900),
    ]
    assert result.phase_groups[-1].phases == ["release"]
    assert all("release" not in p.phases for p in result.projects[1:])  # web is not released by api's tag


def test_the_release_phase_name_is_reserved(repo: Path) -> None:
    files = _files()
    files[".forge/repo.yaml"] = "phases:\n  release: {group: 9}\n"
    (issue,) = _issues(repo, files)
    assert issue.startswith(".forge/repo.yaml:1: phases: ")
    assert "'release' is reserved" in issue


def test_free_form_resources_keep_their_yaml_types() -> None:
    text = (
        "name: api\ndeploy:\n  resources:\n    - apiVersion: v1\n      kind: ServiceAccount\n"
        "      metadata: {name: api}\n      automountServiceAccountToken: false\n      x: [1, 2.5, yes, 'no', null]\n"
    )
    loaded = load_config(text.encode(), ProjectConfig)
    assert loaded.config is not None
    assert loaded.config.deploy is not None
    (resource,) = loaded.config.deploy.resources
    assert resource["automountServiceAccountToken"] is False
    assert resource["x"] == [1, 2.5, "yes", "no", None]
    assert [type(v) for v in resource["x"]] == [int, float, str, str, type(None)]

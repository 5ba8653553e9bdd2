"""The configuration examples in docs/configuration.md are valid (docs stay true to the code)."""

from __future__ import annotations

import re
from pathlib import Path

from forge.discovery.load import load_config
from forge.domain.config import ProjectConfig, RepoConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_repo_and_project_examples_validate() -> None:
    repo_doc, project_doc = _blocks()
    repo = load_config(repo_doc.encode(), RepoConfig)
    project = load_config(project_doc.encode(), ProjectConfig)
    assert not repo.issues, repo.issues
    assert not project.issues, project.issues
    assert repo.config is not None
    assert project.config is not None
    assert repo.config.phases["test"].group == 2
    assert [s.name for s in project.config.phases["test"].steps] == ["unit", "image"]

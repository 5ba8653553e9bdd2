"""The embedded GitOps repository: seeded once, kept across restarts, deployable at once."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from tests.integration.gitops.support import change, make_writer

from forge.embedded.gitops import SEED_ENVIRONMENTS, create_gitops_repository
from forge.settings import Settings


async def test_seeded_once_and_reused_with_its_deployments(tmp_path: Path) -> None:
    url = create_gitops_repository(tmp_path / "home" / "gitops.git")
    repo = pygit2.Repository(url)
    seed = repo.references["refs/heads/main"].peel(pygit2.Commit)
    assert sorted(entry.name or "" for entry in seed.tree) == ["dev", "production", "staging"]
    for environment, text in SEED_ENVIRONMENTS.items():
        blob = repo[seed.tree[f"{environment}/env.yaml"].id]
        assert isinstance(blob, pygit2.Blob)
        assert blob.data == text.encode()
    deployed = await make_writer(url, tmp_path / "work").deploy(change())
    assert create_gitops_repository(tmp_path / "home" / "gitops.git") == url
    assert str(pygit2.Repository(url).references["refs/heads/main"].target) == deployed.sha


def test_processes_find_it_through_forge_gitops_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORGE_GITOPS__URL", str(tmp_path / "gitops.git"))
    monkeypatch.setenv("FORGE_GITOPS__BRANCH", "deploy")
    settings = Settings()
    assert settings.gitops.url == str(tmp_path / "gitops.git")
    assert settings.gitops.branch == "deploy"
    assert settings.gitops.author_name == "Catalyst Forge"

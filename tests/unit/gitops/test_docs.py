"""The examples in docs/gitops.md are what the code writes (docs stay true to the code)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from forge.embedded.gitops import SEED_ENVIRONMENTS
from forge.gitops import (
    ApplicationDefaults,
    AppLocation,
    ReleasePointer,
    environment_root_application,
    pointer_message,
    render_application,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "gitops.md"


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_documents_are_rendered_byte_exact() -> None:
    pointer_doc, values_doc, application_doc, root_doc = _yaml_blocks()
    pointer = ReleasePointer.build(
        repository="acme/shop",
        project="api",
        release_number=7,
        commit="4f1c2a9e0b7d3c6a5e8f1b2d4c6a8e0f2b4d6c8a",
        digest="sha256:9b2c4d6e8f0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c",
        deployed_by="alice@example.com",
        deployed_at=datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC),
    )
    assert pointer.to_yaml().decode() == pointer_doc
    assert SEED_ENVIRONMENTS["dev"] == values_doc
    defaults = ApplicationDefaults(repo_url="https://github.com/acme/gitops.git")
    assert render_application(AppLocation("dev", "acme/shop", "api"), defaults).decode() == application_doc
    assert environment_root_application("dev", defaults).decode() == root_doc
    message = pointer_message(
        environment="dev",
        repository="acme/shop",
        project="api",
        release_number=7,
        commit=pointer.spec.release,
        digest=pointer.spec.digest,
        actor="alice@example.com",
        reason="auto-deploy: release 7 on main",
    )
    assert f"```\n{message}```\n" in DOC.read_text()

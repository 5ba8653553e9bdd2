"""docs/releases.md stays true to the code: its examples render, resolve and parse as it says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from forge.discovery.load import load_config
from forge.domain.config import ProjectConfig
from forge.releases import ARTIFACT_FIELDS, ReleaseMetadata, artifact_fields, render_resources, resolve_env

DOC = (Path(__file__).resolve().parents[3] / "docs" / "releases.md").read_text(encoding="utf-8")
SHA = "4f1c3a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"


def _block(language: str) -> str:
    blocks: list[str] = re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_artifact_fields_table_lists_every_field() -> None:
    table = DOC.split("### Artifact fields", 1)[1].split("\n\n")[1]
    assert re.findall(r"^\| `(\w+)` \|", table, flags=re.M) == list(ARTIFACT_FIELDS)


def test_the_deploy_example_renders_and_resolves_as_described() -> None:
    text = "name: api\n" + _block("yaml")
    loaded = load_config(text.encode(), ProjectConfig)
    assert loaded.config is not None, loaded.issues
    assert loaded.config.deploy is not None
    values = {"server": artifact_fields("registry.example.org/acme/shop/api/server", "sha256:" + "a1" * 32, SHA)}
    objects = render_resources(loaded.config.deploy.resources, values)
    env = {
        "namespace": "shop-dev",
        "api": {"replicas": 3, "resources": {"limits": {"cpu": "1"}}},
        "db": {"host": "db.dev"},
    }
    [deployment] = resolve_env(objects, env)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert container["args"] == ["--db=postgres://db.dev:5432/shop"]
    assert container["image"] == values["server"]["ref"]


def test_the_metadata_example_is_valid_and_canonical_in_content() -> None:
    example = _block("json").encode()
    metadata = ReleaseMetadata.from_bytes(example)
    assert json.loads(metadata.to_bytes()) == json.loads(example)

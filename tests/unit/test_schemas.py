"""The committed JSON Schemas match the models (regenerate with `forge schema`)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from forge.cli.main import cli
from forge.cli.schema import render_schemas

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schemas_are_current() -> None:
    for name, text in render_schemas().items():
        committed = ROOT / "schemas" / name
        assert committed.read_text() == text, f"{committed} is stale; run `forge schema`"


def test_schema_check_flags_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["schema", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(cli, ["schema", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "project.schema.json").write_text("{}")
    result = runner.invoke(cli, ["schema", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "project.schema.json" in result.output


def test_project_schema_forbids_unknown_keys() -> None:
    schema = json.loads(render_schemas()["project.schema.json"])
    assert schema["additionalProperties"] is False
    assert schema["properties"]["name"]["pattern"] == "^[a-z][a-z0-9-]*$"

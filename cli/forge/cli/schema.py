"""``forge schema``: JSON Schemas of .forge/repo.yaml and .forge/project.yaml for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from forge.domain.config import ProjectConfig, RepoConfig

__all__ = ["render_schemas", "schema"]

_SCHEMAS: dict[str, type[RepoConfig] | type[ProjectConfig]] = {
    "repo.schema.json": RepoConfig,
    "project.schema.json": ProjectConfig,
}


def render_schemas() -> dict[str, str]:
    """File name → JSON text, stable across runs."""
    out: dict[str, str] = {}
    for name, model in _SCHEMAS.items():
        doc: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://forge.projectcatalyst.io/schemas/{name}",
            **model.model_json_schema(),
        }
        out[name] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory to write the schemas to",
)
@click.option("--check", is_flag=True, help="Exit 1 when the files on disk differ instead of writing")
def schema(out_dir: Path, check: bool) -> None:
    """Write the JSON Schemas of the configuration files."""
    stale = []
    for name, text in render_schemas().items():
        path = out_dir / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(str(path))
    if stale:
        click.echo(f"out of date: {', '.join(stale)} (run `forge schema`)", err=True)
        raise SystemExit(1)

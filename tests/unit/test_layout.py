"""Guards of the namespace layout (STYLE §1)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTIONS = ["core", "cli", "api", "controller", "workflows", "gitops", "cmp-plugin"]


@pytest.mark.parametrize("portion", PORTIONS)
def test_no_portion_has_forge_init(portion: str) -> None:
    assert (ROOT / portion / "forge").is_dir()
    assert not (ROOT / portion / "forge" / "__init__.py").exists(), (
        f"{portion}/forge/__init__.py would hide every other portion of the forge namespace"
    )


def test_every_portion_is_importable_from_one_namespace() -> None:
    forge = importlib.import_module("forge")
    paths = {Path(p).resolve() for p in forge.__path__}
    assert {(ROOT / p / "forge").resolve() for p in PORTIONS} <= paths

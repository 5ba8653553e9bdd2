"""Every ``FORGE_*`` setting of ``forge.settings`` is in docs/configuration.md with its default, and every
``FORGE_<GROUP>__<FIELD>`` the user-facing docs name exists (docs stay true to the code)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from forge.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
CONFIGURATION = ROOT / "docs" / "configuration.md"
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _settings(model: type[BaseModel] = Settings, prefix: str = "FORGE") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        env = f"{prefix}_{name.upper()}" if prefix == "FORGE" else f"{prefix}__{name.upper()}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _settings(field.annotation, env)
        else:
            yield env, field.get_default(call_default_factory=True)


def _shown(default: Any) -> str:
    """A default as docs/configuration.md writes it in its settings table."""
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    if isinstance(default, list):
        return "`" + json.dumps([str(item) for item in default]) + "`"
    if isinstance(default, PurePath):
        default = str(default)
    return f"`{default}`"


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(FORGE_[A-Z0-9_]+)` \| ([^|]+) \|", CONFIGURATION.read_text(), flags=re.M)
    return {name: default.strip() for name, default in rows}


SETTINGS = dict(_settings())


@pytest.mark.parametrize("env", sorted(SETTINGS))
def test_setting_is_documented_with_its_default(env: str) -> None:
    documented = _documented()
    assert env in documented, f"{env} is not in the settings table of docs/configuration.md"
    assert documented[env] == _shown(SETTINGS[env]), f"{env}: docs say {documented[env]}"


def test_documented_settings_exist() -> None:
    named = {
        (doc.relative_to(ROOT).as_posix(), name)
        for doc in USER_DOCS
        for name in re.findall(r"FORGE_[A-Z0-9]+__[A-Z0-9_]*[A-Z0-9]", doc.read_text())
    }
    unknown = sorted((doc, name) for doc, name in named if name not in SETTINGS)
    assert not unknown, f"settings named in docs but not in forge.settings: {unknown}"

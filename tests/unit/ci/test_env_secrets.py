"""EnvSecretProvider: FORGE_SECRET_<NAME> first, then <dir>/<NAME>; errors name the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge.adapters.env_secrets import EnvSecretProvider
from forge.errors import InvalidInputError, NotFoundError


async def test_environment_first_then_files(tmp_path: Path) -> None:
    (tmp_path / "TOKEN").write_text("from-file\n")
    (tmp_path / "RAW").write_text("line1\nline2")
    provider = EnvSecretProvider(tmp_path, environ={"FORGE_SECRET_TOKEN": "from-env"})
    assert await provider.get("TOKEN") == "from-env"
    assert await provider.get("RAW") == "line1\nline2"
    assert await EnvSecretProvider(tmp_path, environ={}).get("TOKEN") == "from-file"


async def test_unknown_secret_names_itself_and_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"secret GHOST not found .*FORGE_SECRET_GHOST or .*GHOST") as info:
        await EnvSecretProvider(tmp_path, environ={}).get("GHOST")
    assert info.value.details == {"secret": "GHOST"}


@pytest.mark.parametrize("name", ["../etc/passwd", "a-b", "", "1X"])
async def test_names_must_be_variable_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInputError):
        await EnvSecretProvider(tmp_path, environ={}).get(name)

"""EnvSecretProvider: FORGE_SECRET_<NAME> first, then <dir>/<NAME>; errors name the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge.adapters.env_secrets import EnvSecretProvider, GrantedSecrets
from forge.errors import AuthorizationError, InvalidInputError, NotFoundError


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


async def test_a_repository_reads_only_its_granted_secrets_and_never_a_platform_name(tmp_path: Path) -> None:
    for name in ("TOKEN", "OTHER", "FORGE_DATABASE__URL"):
        (tmp_path / name).write_text(f"value of {name}")
    provider = EnvSecretProvider(tmp_path, environ={"FORGE_SECRET_FORGE_X": "platform"})
    granted = GrantedSecrets(provider, ["TOKEN", "FORGE_DATABASE__URL", "FORGE_X"], repository="acme/app")
    assert await granted.get("TOKEN") == "value of TOKEN"
    with pytest.raises(AuthorizationError, match="secret OTHER is not granted to repository acme/app") as refused:
        await granted.get("OTHER")
    assert "value" not in refused.value.message
    for name in ("FORGE_DATABASE__URL", "FORGE_X", "forge_x"):
        with pytest.raises(AuthorizationError, match=r"platform name \(FORGE_\*\)"):
            await granted.get(name)

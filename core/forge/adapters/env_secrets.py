"""SecretProvider from the process environment and a directory of files (DESIGN §5).

A secret ``NAME`` is looked up as:

1. the environment variable ``FORGE_SECRET_<NAME>``;
2. the file ``<secrets_dir>/<NAME>`` (a mounted Kubernetes Secret has one file per key), with
   one trailing newline removed (``echo value > file`` adds it; Kubernetes never does).

Names are environment-variable names (``[A-Za-z_][A-Za-z0-9_]*``): the CI worker hands each
secret to its step under its own name, so nothing else could be used there, and a name can
never be a path.

A step never asks this provider directly: it asks :class:`GrantedSecrets`, its repository's view,
which answers only names an operator granted the repository (``Repository.secrets``) and never a
platform name (``FORGE_*``, the prefix of every platform setting). The API refuses to grant
``FORGE_*`` names and repositories' webhook secrets (the other secrets this provider holds), so a
step can resolve neither.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from forge.errors import AuthorizationError, InvalidInputError, NotFoundError
from forge.ports import SecretProvider

__all__ = ["ENV_PREFIX", "PLATFORM_PREFIX", "EnvSecretProvider", "GrantedSecrets"]

ENV_PREFIX = "FORGE_SECRET_"
#: Every platform setting and credential is a ``FORGE_*`` variable: never a step's secret.
PLATFORM_PREFIX = "FORGE_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvSecretProvider:
    def __init__(self, directory: Path | None = None, *, environ: Mapping[str, str] | None = None):
        self.directory = directory
        self._environ = environ  # None: os.environ, read at each lookup

    async def get(self, name: str) -> str:
        if not _NAME.match(name):
            raise InvalidInputError(
                f"secret name {name!r} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                details={"secret": name},
            )
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(ENV_PREFIX + name)
        if value is not None:
            return value
        if self.directory is not None:
            value = await asyncio.to_thread(self._read, self.directory / name)
            if value is not None:
                return value
        where = f"${ENV_PREFIX}{name}" + (f" or {self.directory / name}" if self.directory is not None else "")
        raise NotFoundError(f"secret {name} not found (looked for {where})", details={"secret": name})

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return text.removesuffix("\n")


class GrantedSecrets:
    """What one repository's steps may read of ``provider``: the ``granted`` names, never a ``FORGE_*`` one.

    Any other name is an ``AuthorizationError`` naming the secret and the repository (never a value),
    raised before ``provider`` is asked, so an ungranted secret is not even looked up.
    """

    def __init__(self, provider: SecretProvider, granted: Iterable[str], *, repository: str):
        self._provider = provider
        self._granted = frozenset(granted)
        self.repository = repository

    async def get(self, name: str) -> str:
        if name.upper().startswith(PLATFORM_PREFIX):
            raise AuthorizationError(
                f"secret {name} is a platform name ({PLATFORM_PREFIX}*) and is never given to a step",
                details={"secret": name, "repository": self.repository},
            )
        if name not in self._granted:
            raise AuthorizationError(
                f"secret {name} is not granted to repository {self.repository} "
                f"(an operator grants it: PATCH /v1/repositories/{self.repository} with its name in secrets)",
                details={"secret": name, "repository": self.repository},
            )
        return await self._provider.get(name)

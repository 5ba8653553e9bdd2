"""SecretProvider from the process environment and a directory of files (DESIGN §5).

A secret ``NAME`` is looked up as:

1. the environment variable ``FORGE_SECRET_<NAME>``;
2. the file ``<secrets_dir>/<NAME>`` (a mounted Kubernetes Secret has one file per key), with
   one trailing newline removed (``echo value > file`` adds it; Kubernetes never does).

Names are environment-variable names (``[A-Za-z_][A-Za-z0-9_]*``): the CI worker hands each
secret to its step under its own name, so nothing else could be used there, and a name can
never be a path.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path

from forge.errors import InvalidInputError, NotFoundError

__all__ = ["ENV_PREFIX", "EnvSecretProvider"]

ENV_PREFIX = "FORGE_SECRET_"
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

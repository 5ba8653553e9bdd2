"""SecretProvider on one Kubernetes Secret (DESIGN §5), and the choice of provider by settings.

``FORGE_SECRETS__PROVIDER=kubernetes``: a secret ``NAME`` is the key ``NAME`` of the Secret
``FORGE_SECRETS__SECRET`` in ``FORGE_SECRETS__NAMESPACE`` (its ``data``, base64, read through the
Kubernetes API with the client of :mod:`forge.adapters.k8s_client`), decoded as UTF-8 and returned
as stored (no newline is removed: Kubernetes adds none). Names are environment-variable names,
exactly as for :class:`~forge.adapters.env_secrets.EnvSecretProvider` (a step receives each secret
under its own name), so both providers answer the same questions the same way: the compliance
suite in tests/integration/k8s runs one set of tests against both.

One read of the Secret serves every lookup for ``cache`` seconds (a webhook burst or a CI job's
dozen secrets cost one API call); a rotated value is seen at most that late. Errors: a missing
Secret or key ``NotFoundError`` naming the secret and where it looked, never a value; the API down
``TransientError``; refused credentials ``PermanentError``.

The default provider stays ``env`` (:func:`secret_provider`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.k8s_client import KubeClient
from forge.errors import InvalidInputError, NotFoundError
from forge.ports import SecretProvider
from forge.settings import Settings

__all__ = ["KubernetesSecretProvider", "secret_provider"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_provider(settings: Settings) -> SecretProvider:
    """The SecretProvider ``FORGE_SECRETS__PROVIDER`` names; default ``env`` (variables, then ``ci.secrets_dir``)."""
    if settings.secrets.provider == "kubernetes":
        return KubernetesSecretProvider(
            KubeClient.connect(settings.secrets),
            namespace=settings.secrets.namespace,
            secret=settings.secrets.secret,
            cache=settings.secrets.cache,
        )
    return EnvSecretProvider(settings.ci.secrets_dir)


class KubernetesSecretProvider:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        secret: str,
        cache: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self.namespace = namespace
        self.secret = secret
        self._cache = cache
        self._clock = clock
        self._data: Mapping[str, Any] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> str:
        if not _NAME.match(name):
            raise InvalidInputError(
                f"secret name {name!r} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                details={"secret": name},
            )
        where = f"Secret {self.namespace}/{self.secret}"
        try:
            data = await self._secret_data()
        except NotFoundError as exc:
            raise NotFoundError(f"secret {name} not found ({where} does not exist)", details={"secret": name}) from exc
        encoded = data.get(name)
        if not isinstance(encoded, str):
            raise NotFoundError(
                f"secret {name} not found (looked for the key {name} in {where})", details={"secret": name}
            )
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"secret {name}: the key {name} of {where} is not base64 of UTF-8 text", details={"secret": name}
            ) from exc

    async def close(self) -> None:
        await self._client.close()

    async def _secret_data(self) -> Mapping[str, Any]:
        async with self._lock:
            if self._data is not None and self._clock() - self._read_at < self._cache:
                return self._data
            found = await self._client.secret(self.namespace, self.secret)
            data = found.get("data")
            self._data = data if isinstance(data, Mapping) else {}
            self._read_at = self._clock()
            return self._data

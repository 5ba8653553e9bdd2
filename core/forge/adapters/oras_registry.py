"""ArtifactRegistry on oras-py: OCI distribution over HTTP(S), translated into the error contract of the port.

oras-py is synchronous (requests), so every call runs in ``asyncio.to_thread``. What we take from it:
its session, its auth backends (Bearer token flow for Harbor and the like, Basic credentials) and
``do_request`` (the request with the auth challenge answered). What we bypass, and why:

- ``do_request``'s retry decorator sleeps 3, 5, 11, 29 and 83 s on connection errors and 500s, and
  then raises a bare ``ValueError``; retrying is the workers' job (``TransientError``), so each
  adapter's registry uses the undecorated function.
- ``upload_blob`` turns a refused upload (401, 404, 5xx on the POST) into ``ValueError`` without the
  status, and ``get_manifest``/``get_tags`` drop the status and the body's bytes (the manifest digest
  must be computed over the exact bytes). Those requests go through ``do_request`` here.
- oras's logger writes WARNING and above to the console when nothing is configured; a
  ``NullHandler`` on the ``oras`` logger keeps it quiet (records still reach the root handlers).

Every call goes through the ``registry`` circuit breaker (``forge.adapters._breakers``): after
repeated ``TransientError``s (connection refused, 429, 5xx) calls fail fast until a probe succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import oras.auth
import oras.provider

from forge.adapters._breakers import CircuitBreaker
from forge.adapters._oras_http import RegistryHttp
from forge.errors import InvalidInputError
from forge.ports.registry import (
    EMPTY_CONFIG,
    IMAGE_MANIFEST,
    Layer,
    Manifest,
    artifact_manifest,
    check_digest,
    check_repository,
    check_tag,
    read_layout,
    sha256_digest,
)

if TYPE_CHECKING:
    from forge.settings import RegistrySettings

__all__ = ["OrasRegistry"]

T = TypeVar("T")
logging.getLogger("oras").addHandler(logging.NullHandler())
_TIMEOUT = (5.0, 120.0)  # (connect, read) seconds: a registry that stops answering is an outage, not a hang


class _ChallengeAuth(oras.auth.TokenAuth):  # type: ignore[misc]  # oras ships no type information
    """oras's token backend answers Bearer challenges only: on docker-registry's ``Basic realm=...`` it
    would ask the realm (``forge``) for a token. This one answers a Basic challenge with the
    credentials and then sends them up front, so no request with a body is sent twice."""

    def __init__(self) -> None:
        super().__init__()
        self._basic = False

    def get_auth_header(self) -> dict[str, str]:
        if self._basic and getattr(self, "_basic_auth", None):
            return {"Authorization": f"Basic {self._basic_auth}"}
        return dict(super().get_auth_header())

    def authenticate_request(self, original: Any, headers: dict[str, str], refresh: bool = False) -> Any:
        if original.headers.get("Www-Authenticate", "").lower().startswith("basic"):
            result = dict(headers or {})
            if getattr(self, "_basic_auth", None):
                self._basic = True
                self.token = "basic"  # noqa: S105 - a marker: any token makes do_request send the header up front
                result.update(self.get_auth_header())
            return result, True  # without credentials the repeated 401 reaches the error mapping
        return super().authenticate_request(original, headers, refresh)


class OrasRegistry:
    """One OCI registry; ``repository`` arguments are paths inside it, never hosts."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.path.strip("/"):
            raise InvalidInputError(
                "FORGE_REGISTRY__URL: expected http(s)://host[:port] without credentials or path"
                f" (got scheme {parts.scheme!r}, host {parts.hostname!r})"
            )
        self.host = parts.netloc
        registry = oras.provider.Registry(hostname=self.host, insecure=parts.scheme == "http")
        auth = _ChallengeAuth()
        auth.session, auth.prefix, auth._tls_verify = registry.session, registry.prefix, True  # noqa: SLF001 - as oras.auth.get_auth_backend sets them
        if username is not None and password is not None:
            auth.set_basic_auth(username, password)
        registry.auth = auth
        registry.do_request = functools.partial(oras.provider.Registry.do_request.__wrapped__, registry)
        registry.session.request = functools.partial(registry.session.request, timeout=_TIMEOUT)
        self._http = RegistryHttp(registry, f"{parts.scheme}://{self.host}", self.host)
        self._breaker = breaker or CircuitBreaker("registry")

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> OrasRegistry:
        password = settings.password.get_secret_value() if settings.password is not None else None
        breaker = CircuitBreaker.from_settings("registry", settings.breaker)
        return cls(settings.url, username=settings.username, password=password, breaker=breaker)

    def reference(self, repository: str, digest: str) -> str:
        return f"{self.host}/{check_repository(repository)}@{check_digest(digest)}"

    async def push_artifact(
        self,
        repository: str,
        *,
        artifact_type: str,
        layers: Sequence[Layer],
        annotations: Mapping[str, str],
        tags: Sequence[str] = (),
    ) -> str:
        _check_names(repository, tags)
        manifest = artifact_manifest(artifact_type, layers, annotations)
        blobs = [EMPTY_CONFIG, *(layer.data for layer in layers)]

        def push() -> str:
            for data in blobs:
                self._http.upload(repository, data, digest=sha256_digest(data), size=len(data))
            return self._http.put_manifest(repository, manifest, IMAGE_MANIFEST, tags)

        return await self._thread(push)

    async def push_layout(
        self, repository: str, layout: Path, *, tags: Sequence[str] = (), ref_name: str | None = None
    ) -> str:
        _check_names(repository, tags)

        def push() -> str:
            image = read_layout(layout, ref_name)
            for blob in image.blobs:
                with blob.path.open("rb") as stream:
                    self._http.upload(repository, stream, digest=blob.digest, size=blob.size)
            return self._http.put_manifest(repository, image.manifest, image.media_type, tags)

        return await self._thread(push)

    async def manifest(self, repository: str, reference: str) -> Manifest:
        check_repository(repository)
        return await self._thread(lambda: self._http.manifest(repository, reference))

    async def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        check_repository(repository)
        check_digest(digest)
        return await self._thread(lambda: self._http.blob(repository, digest, max_bytes))

    async def tags(self, repository: str) -> list[str]:
        check_repository(repository)
        return sorted(await self._thread(lambda: list(self._http.tags(repository))))

    async def tag(self, repository: str, digest: str, tag: str) -> None:
        _check_names(repository, [tag])
        check_digest(digest)

        def retag() -> None:
            data, media_type = self._http.manifest_bytes(repository, digest)
            self._http.put_manifest(repository, data, media_type, [tag])

        await self._thread(retag)

    async def _thread(self, call: Callable[[], T]) -> T:
        """Run one blocking registry exchange off the event loop (the default pool bounds concurrency)."""
        async with self._breaker:
            return await asyncio.to_thread(call)


def _check_names(repository: str, tags: Sequence[str]) -> None:
    check_repository(repository)
    for tag in tags:
        check_tag(tag)

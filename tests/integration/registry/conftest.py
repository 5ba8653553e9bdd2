"""Harnesses for the ArtifactRegistry compliance suite: every adapter runs the same tests.

``memory`` is the in-process fake; ``oras`` is the oras-py adapter against a real
``docker-registry`` on loopback (the session's ``registry_server``). To add an adapter, write a
class with the ``RegistryHarness`` method and register it in ``_HARNESSES``.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess
from forge.ports.fakes import MemoryRegistry
from forge.ports.registry import ArtifactRegistry


class RegistryHarness(Protocol):
    def open(self) -> ArtifactRegistry:
        """An adapter on a working registry."""

    def stored_blob(self, repository: str, digest: str) -> Path | None:
        """Where the registry keeps a blob's bytes on disk, when it keeps them on disk."""


class _MemoryHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._registry = MemoryRegistry(host="registry.test:5000")

    def open(self) -> ArtifactRegistry:
        return self._registry

    def stored_blob(self, repository: str, digest: str) -> Path | None:
        return None


class _OrasHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._server: ServiceProcess = request.getfixturevalue("registry_server")

    def open(self) -> ArtifactRegistry:
        return OrasRegistry(self._server.url)

    def stored_blob(self, repository: str, digest: str) -> Path | None:
        hex_digest = digest.removeprefix("sha256:")
        blobs = self._server.log.parent / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return blobs / hex_digest[:2] / hex_digest / "data"


_HARNESSES: dict[str, Callable[[pytest.FixtureRequest], RegistryHarness]] = {
    "memory": _MemoryHarness,
    "oras": _OrasHarness,
}


@pytest.fixture(params=sorted(_HARNESSES))
def harness(request: pytest.FixtureRequest) -> RegistryHarness:
    return _HARNESSES[request.param](request)


@pytest.fixture
def registry(harness: RegistryHarness) -> ArtifactRegistry:
    return harness.open()


@pytest.fixture
def repository() -> str:
    """A fresh repository per test, so tests never see each other's tags."""
    return f"owner/repo/t{uuid.uuid4().hex[:12]}/artifact"


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd entry, as docker-registry's ``auth.htpasswd`` wants, from the stdlib alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves the stdlib in 3.13
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        pytest.fail("this libcrypt cannot make bcrypt hashes; docker-registry's htpasswd needs them")
    return f"{user}:{hashed}\n"

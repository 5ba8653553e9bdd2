"""Harnesses for the ArtifactRegistry compliance suite: every adapter runs the same tests.

``memory`` is the in-process fake; ``oras`` is the oras-py adapter against a real
``docker-registry`` on loopback (the session's ``registry_server``). To add an adapter, write a
class with the ``RegistryHarness`` method and register it in ``_HARNESSES``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

import pytest

from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess
from forge.ports.fakes import MemoryRegistry
from forge.ports.registry import ArtifactRegistry


class RegistryHarness(Protocol):
    def open(self) -> ArtifactRegistry:
        """An adapter on a working registry."""


class _MemoryHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._registry = MemoryRegistry(host="registry.test:5000")

    def open(self) -> ArtifactRegistry:
        return self._registry


class _OrasHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._server: ServiceProcess = request.getfixturevalue("registry_server")

    def open(self) -> ArtifactRegistry:
        return OrasRegistry(self._server.url)


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

"""Harnesses for the ArtifactRegistry compliance suite: every adapter runs the same tests.

``memory`` is the in-process fake; ``oras`` is the oras-py adapter against a real
``docker-registry`` on loopback (the session's ``registry_server``); ``http-reader`` is the
read-only ``HttpRegistryReader`` (stdlib, what forge-cmp pulls with) on the same registry: the
suite pushes through ``OrasRegistry`` and every read (manifest, blob, tags, reference) goes through
the reader, so each test's read checks are the reader's. To add an adapter, write a class with the
``RegistryHarness`` methods and register it in ``_HARNESSES``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from forge.adapters.http_registry import HttpRegistryReader
from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess
from forge.ports.fakes import MemoryRegistry
from forge.ports.registry import ArtifactReader, ArtifactRegistry, Layer, Manifest


class RegistryHarness(Protocol):
    def open(self) -> ArtifactRegistry:
        """An adapter on a working registry."""

    def close(self) -> None:
        """Release what ``open`` acquired."""


class _MemoryHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._registry = MemoryRegistry(host="registry.test:5000")

    def open(self) -> ArtifactRegistry:
        return self._registry

    def close(self) -> None:
        pass


class _OrasHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._server: ServiceProcess = request.getfixturevalue("registry_server")

    def open(self) -> ArtifactRegistry:
        return OrasRegistry(self._server.url)

    def close(self) -> None:
        pass


class ReadThrough:
    """An ``ArtifactRegistry`` whose writes go to ``writer`` and whose reads come from ``reader``."""

    def __init__(self, writer: ArtifactRegistry, reader: ArtifactReader) -> None:
        self.writer, self.reader = writer, reader

    def reference(self, repository: str, digest: str) -> str:
        return self.reader.reference(repository, digest)

    async def manifest(self, repository: str, reference: str) -> Manifest:
        return await self.reader.manifest(repository, reference)

    async def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        return await self.reader.blob(repository, digest, max_bytes=max_bytes)

    async def tags(self, repository: str) -> list[str]:
        return await self.reader.tags(repository)

    async def push_artifact(
        self,
        repository: str,
        *,
        artifact_type: str,
        layers: Sequence[Layer],
        annotations: Mapping[str, str],
        tags: Sequence[str] = (),
    ) -> str:
        return await self.writer.push_artifact(
            repository, artifact_type=artifact_type, layers=layers, annotations=annotations, tags=tags
        )

    async def push_layout(
        self, repository: str, layout: Path, *, tags: Sequence[str] = (), ref_name: str | None = None
    ) -> str:
        return await self.writer.push_layout(repository, layout, tags=tags, ref_name=ref_name)

    async def tag(self, repository: str, digest: str, tag: str) -> None:
        await self.writer.tag(repository, digest, tag)


class _HttpReaderHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._server: ServiceProcess = request.getfixturevalue("registry_server")
        self._readers: list[HttpRegistryReader] = []

    def open(self) -> ArtifactRegistry:
        self._readers.append(HttpRegistryReader(self._server.url))
        return ReadThrough(OrasRegistry(self._server.url), self._readers[-1])

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


_HARNESSES: dict[str, Callable[[pytest.FixtureRequest], RegistryHarness]] = {
    "http-reader": _HttpReaderHarness,
    "memory": _MemoryHarness,
    "oras": _OrasHarness,
}


@pytest.fixture(params=sorted(_HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[RegistryHarness]:
    opened = _HARNESSES[request.param](request)
    yield opened
    opened.close()


@pytest.fixture
def registry(harness: RegistryHarness) -> ArtifactRegistry:
    return harness.open()


@pytest.fixture
def repository() -> str:
    """A fresh repository per test, so tests never see each other's tags."""
    return f"owner/repo/t{uuid.uuid4().hex[:12]}/artifact"

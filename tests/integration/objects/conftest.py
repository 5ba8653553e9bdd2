"""Harnesses for the ObjectStore compliance suite: every adapter runs the same tests.

To add an adapter, write a class with the ``AdapterHarness`` methods (starting whatever server it
needs through ``request.getfixturevalue``) and register it in ``_HARNESSES``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest
from pydantic import SecretStr

from forge.adapters.minio_objects import MinioObjectStore
from forge.embedded.process import ServiceProcess, free_port
from forge.ports.objects import ObjectStore
from forge.settings import ObjectStoreSettings


class AdapterHarness(Protocol):
    def open(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        """A working store on ``bucket`` (not created yet)."""

    def open_wrong_secret(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        """A store on a live server whose credentials are refused."""

    def open_unreachable(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        """A store pointed at an address where nothing listens."""


class _MinioHarness:
    def __init__(self, request: pytest.FixtureRequest):
        self._server: ServiceProcess = request.getfixturevalue("s3_server")

    def _settings(self, bucket: str, **overrides: object) -> ObjectStoreSettings:
        fields: dict[str, object] = {
            "endpoint": self._server.url,
            "access_key": self._server.extra["access_key"],
            "secret_key": SecretStr(self._server.extra["secret_key"]),
            "bucket": bucket,
        }
        return ObjectStoreSettings.model_validate({**fields, **overrides})

    @asynccontextmanager
    async def _store(self, settings: ObjectStoreSettings) -> AsyncIterator[ObjectStore]:
        async with MinioObjectStore.from_settings(settings) as store:
            yield store

    def open(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        return self._store(self._settings(bucket))

    def open_wrong_secret(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        return self._store(self._settings(bucket, secret_key=SecretStr("not-the-secret")))

    def open_unreachable(self, bucket: str) -> AbstractAsyncContextManager[ObjectStore]:
        return self._store(self._settings(bucket, endpoint=f"127.0.0.1:{free_port()}"))


_HARNESSES: dict[str, Callable[[pytest.FixtureRequest], AdapterHarness]] = {
    "minio": _MinioHarness,
}


@pytest.fixture(params=sorted(_HARNESSES))
def harness(request: pytest.FixtureRequest) -> AdapterHarness:
    return _HARNESSES[request.param](request)


@pytest.fixture
def bucket() -> str:
    """A fresh bucket name per test, so tests never see each other's objects."""
    return f"forge-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def store(harness: AdapterHarness, bucket: str) -> AsyncIterator[ObjectStore]:
    async with harness.open(bucket) as opened:
        await opened.ensure_bucket()
        yield opened

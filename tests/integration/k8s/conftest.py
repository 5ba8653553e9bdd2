"""The fake Kubernetes API server (support.py) and clients of it configured the way settings configure them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from forge.adapters.k8s_client import KubeClient
from forge.settings import KubeClientSettings

from .support import TOKEN, FakeKube


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.start()
    yield fake
    fake.close()


@pytest.fixture
async def kube_client(kube: FakeKube) -> AsyncIterator[KubeClient]:
    client = KubeClient.connect(KubeClientSettings(server=kube.url, token=SecretStr(TOKEN), request_timeout=5))
    yield client
    await client.close()

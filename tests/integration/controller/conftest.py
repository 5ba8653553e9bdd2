"""The fake Argo Server (support.py) and an ArgoWorkflowEngine pointed at it; store and bus come from ../conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from forge.adapters._breakers import CircuitBreaker
from forge.adapters.argo_workflows import ArgoWorkflowEngine

from .support import FakeArgo

NAMESPACE = "forge"


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    fake = FakeArgo(namespace=NAMESPACE)
    fake.start()
    yield fake
    fake.close()


@pytest.fixture
async def engine(argo: FakeArgo) -> AsyncIterator[ArgoWorkflowEngine]:
    # The breaker opens after 5 failures as in production, but probes again after 0.2 s (not 30 s),
    # so an outage longer than the breaker's threshold is waited out within the test.
    breaker = CircuitBreaker("argo", reset_after=0.2)
    async with ArgoWorkflowEngine(argo.url, namespace=NAMESPACE, poll_interval=0.05, breaker=breaker) as e:
        yield e

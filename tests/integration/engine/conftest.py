"""Fixtures for the workflow engine tests; test_argo_engine.py defines its own ``engine``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from forge.workflows.engine import LocalWorkflowEngine


@pytest.fixture
async def engine() -> AsyncIterator[LocalWorkflowEngine]:
    async with LocalWorkflowEngine(kill_grace=2.0) as e:
        yield e

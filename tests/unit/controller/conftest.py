"""Every controller unit test runs with stamina in testing mode: retries never wait.

Testing mode also bounds the attempts of a retry that is otherwise unbounded, so the bound is
far above anything a test needs (a retry that gives up fails its test loudly instead of hanging);
the fixture restores the previous mode, so nothing leaks into other tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina

from .support import ATTEMPTS


@pytest.fixture(autouse=True)
def instant_retries() -> Iterator[None]:
    with stamina.set_testing(True, attempts=ATTEMPTS, cap=True):
        yield

"""Reading series the way Prometheus does: scrape the text format and parse it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a scraped page (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def value(name: str, **labels: str) -> float:
    """The same, read from this process's registry directly."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Wait for ``condition`` (polled; the bound is generous, a test that needs it has failed)."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)

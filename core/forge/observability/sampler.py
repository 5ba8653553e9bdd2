"""What the controller samples every ``FORGE_METRICS__SAMPLE_INTERVAL`` seconds: the JetStream gauges
(``forge.observability.bus``) and the runs in progress, whose oldest age is the stuck-run alert's input."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from prometheus_client import Gauge

from forge.errors import ForgeError
from forge.observability.bus import sample_streams
from forge.ports.bus import MessageBus
from forge.ports.store import RunStore

__all__ = ["OLDEST_ACTIVE_RUN", "RUNS_ACTIVE", "sample_forever", "sample_once"]

RUNS_ACTIVE = Gauge("forge_runs_active", "Runs in progress, by stage (discovery, execution)", ["stage"])
OLDEST_ACTIVE_RUN = Gauge(
    "forge_run_oldest_active_seconds", "Age of the oldest run in progress (since it started), 0 when none"
)
log = logging.getLogger("forge.metrics")


async def sample_once(bus: MessageBus, runs: RunStore) -> None:
    await sample_streams(bus)
    try:
        discovering = await runs.runs_discovering()
        executing = await runs.runs_executing()
    except ForgeError as exc:
        log.debug("runs not sampled: %s", exc)
        return
    RUNS_ACTIVE.labels("discovery").set(len(discovering))
    RUNS_ACTIVE.labels("execution").set(len(executing))
    now = datetime.now(UTC)
    ages = [(now - (run.started_at or run.created_at)).total_seconds() for run in (*discovering, *executing)]
    OLDEST_ACTIVE_RUN.set(max(ages, default=0.0))


async def sample_forever(bus: MessageBus, runs: RunStore, stop: asyncio.Event, *, interval: float) -> None:
    """Sample until ``stop``; a failing sample is skipped, never fatal."""
    while not stop.is_set():
        try:
            await sample_once(bus, runs)
        except ForgeError as exc:
            log.debug("metrics sample failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)

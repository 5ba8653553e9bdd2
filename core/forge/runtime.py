"""Process lifecycle shared by every long-running service: logging, traces, metrics, signals, a deadline on stop.

* ``FORGE_LOG_LEVEL`` (``INFO``) and ``FORGE_LOG_FORMAT``: ``text`` (one line for humans, the default)
  or ``json`` (one object per line with trace and run ids, for Loki; ``forge.observability.logs``).
* Traces are exported by OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``forge.observability.tracing``).
* ``FORGE_METRICS__PORT`` (0: none) serves this process's ``/metrics`` while the service runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from forge.settings import MetricsSettings

__all__ = ["configure_logging", "run_service"]

log = logging.getLogger("forge.runtime")


def configure_logging(name: str) -> None:
    """Logging of the process ``name`` (text, or JSON with ``FORGE_LOG_FORMAT=json``), and its traces."""
    from forge.observability.tracing import configure_tracing

    level = os.environ.get("FORGE_LOG_LEVEL", "INFO").upper()
    if os.environ.get("FORGE_LOG_FORMAT", "text").strip().lower() == "json":
        from forge.observability.logs import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(name))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(
            level=level,
            stream=sys.stderr,
            format=f"%(asctime)s %(levelname)s {name}[%(process)d] %(name)s: %(message)s",
        )
    if configure_tracing(name):
        log.info("traces exported by OTLP/HTTP as service %s", name)


class _MetricsOnly(BaseSettings):
    """The ``FORGE_METRICS__*`` group alone: ``run_service`` serves metrics without the process's settings."""

    model_config = SettingsConfigDict(env_prefix="FORGE_", env_nested_delimiter="__", extra="ignore")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)


def run_service(main: Callable[[asyncio.Event], Awaitable[None]], *, grace: float = 15.0) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM/SIGINT set ``stop``; after ``grace`` s it is cancelled.

    ``/metrics`` is served on ``FORGE_METRICS__PORT`` (when not 0) for as long as the service runs.
    """
    from forge.observability.exposition import metrics_endpoint

    async def _runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.ensure_future(main(stop))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("stopping (grace %.0fs)", grace)
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("did not stop within %.0fs; cancelling", grace)
                task.cancel()
        stopper.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return 1
        return 0

    metrics = _MetricsOnly().metrics
    with metrics_endpoint(metrics.host, metrics.port):
        return asyncio.run(_runner())

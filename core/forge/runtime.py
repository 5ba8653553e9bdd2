"""Process lifecycle shared by every long-running service: logging, traces, metrics, signals, a deadline on stop.

* ``FORGE_LOG_LEVEL`` (``INFO``) and ``FORGE_LOG_FORMAT``: ``text`` (one line for humans, the default)
  or ``json`` (one object per line with trace and run ids, for Loki; ``forge.observability.logs``).
* Traces are exported by OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``forge.observability.tracing``).
* ``FORGE_METRICS__PORT`` (0: none) serves this process's ``/metrics`` while the service runs.

What a service says when it cannot start is one line per cause, never a traceback: ``--help`` is
answered without reading the environment (``service_parser``), a ``FORGE_*`` variable that does not
parse names the variable and exits 2 (``load_settings``), and a ``ForgeError`` out of the service
(PostgreSQL unreachable at start-up, a refused setting) is logged as one line and exits 1, or 2 for
``InvalidInputError`` (``run_service``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from forge.errors import ForgeError, InvalidInputError
from forge.settings import MetricsSettings, Settings

__all__ = ["configure_logging", "instance_id", "load_settings", "run_service", "service_parser"]

EXIT_FAILED = 1
EXIT_USAGE = 2
"""A setting or argument the service refuses (as argparse exits on a bad argument)."""


def instance_id() -> str:
    """A name for this process instance no other has (host, process id, a random part): what its claims
    name (a worker's job claims, a controller's run and deployment claims), at most 225 characters."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def service_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The service's argument parser: ``--help`` says what it is and where its settings are documented."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Configured by FORGE_* environment variables (docs/configuration.md).",
    )


def load_settings(prog: str) -> Settings:
    """The process's settings; a variable that does not parse is one line on stderr each, then exit 2."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            name = "FORGE_" + "__".join(str(part) for part in loc).upper() if loc else "the FORGE_* settings"
            sys.stderr.write(f"{prog}: {name}: {error['msg']} (got {error.get('input')!r})\n")
        raise SystemExit(EXIT_USAGE) from None


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
        try:
            return asyncio.run(_runner())
        except ForgeError as exc:
            log.error("%s", exc)
            return EXIT_USAGE if isinstance(exc, InvalidInputError) else EXIT_FAILED

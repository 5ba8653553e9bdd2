"""Serving the series: ``/metrics`` on a port of its own (controller, workers) or as an API route."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server

__all__ = ["CONTENT_TYPE", "metrics_endpoint", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
log = logging.getLogger("forge.metrics")


def render() -> bytes:
    """Every series of this process in the Prometheus text format."""
    return generate_latest(REGISTRY)


@contextlib.contextmanager
def metrics_endpoint(host: str, port: int) -> Iterator[int | None]:
    """Serve ``/metrics`` on ``host:port`` (a thread) while the block runs; ``port`` 0: nothing (yields None).

    Yields the bound port. prometheus-client answers every path, ``/metrics`` included.
    """
    if port == 0:
        yield None
        return
    server, thread = start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

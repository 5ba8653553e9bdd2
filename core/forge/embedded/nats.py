"""Start a real ``nats-server`` with JetStream on free loopback ports (DESIGN §9)."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

from forge.embedded.process import ServiceProcess, binary, free_port, start_service

__all__ = ["start_nats"]


def start_nats(
    data_dir: Path, port: int | None = None, *, timeout: float = 30.0, config: Path | None = None
) -> ServiceProcess:
    """Run ``nats-server -js`` storing into ``data_dir/js`` and logging into ``data_dir/nats.log``.

    Ready when the monitor's ``/healthz?js-enabled-only=true`` answers 200. ``extra["monitor_url"]``
    is the HTTP monitoring endpoint.

    JetStream keeps its default ``sync_interval`` (Debian's 2.9 has no such option): a SIGKILLed
    server keeps every message it acknowledged but may forget the last consumer acks, which the
    workers' stored-result read on every delivery covers (docs/architecture.md, "No step runs again
    once it ended"); an fsync per message would protect against a machine crash only, at half the
    sequential job rate (docs/performance.md).
    """
    client_port = port if port is not None else free_port()
    monitor_port = free_port()
    store = data_dir / "js"
    store.mkdir(parents=True, exist_ok=True)
    argv = [
        binary("nats-server"),
        "-a",
        "127.0.0.1",
        "-p",
        str(client_port),
        "-m",
        str(monitor_port),
        "-js",
        "-sd",
        str(store),
    ]
    if config is not None:  # a configuration file (users and permissions, say); the flags above override it
        argv += ["-c", str(config)]
    proc = start_service(
        "nats-server",
        argv,
        url=f"nats://127.0.0.1:{client_port}",
        ready=_healthz(monitor_port),
        log=data_dir / "nats.log",
        timeout=timeout,
    )
    proc.extra["monitor_url"] = f"http://127.0.0.1:{monitor_port}"
    return proc


def _healthz(monitor_port: int) -> Callable[[], bool]:
    def check() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", monitor_port, timeout=0.5)
        try:
            conn.request("GET", "/healthz?js-enabled-only=true")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    return check

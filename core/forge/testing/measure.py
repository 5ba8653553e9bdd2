"""What the benchmarks in ``bench/`` share: the machine they ran on, CPU accounting and pinning, and
the services a benchmark of ``forge-api`` starts."""

from __future__ import annotations

import contextlib
import os
import platform
import uuid
from collections.abc import Iterator
from pathlib import Path

from forge.embedded.issuer import LocalIssuer, start_issuer
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess
from forge.embedded.s3 import start_s3
from forge.testing.postgres import create_database, start_postgres

__all__ = ["api_services", "cpu_seconds", "machine", "pin"]


def machine() -> str:
    """``<cpu model>, <n> CPUs, Python <version>`` for a benchmark's report."""
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def pin(pid: int, cpu: int) -> None:
    """Run ``pid`` (0: this process) on ``cpu`` alone, when the machine has that many."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def api_services(tmp: Path, *, postgres_cpu: int | None = None) -> Iterator[dict[str, str]]:
    """PostgreSQL (a new database; pinned to ``postgres_cpu`` when embedded), NATS, S3 and an OIDC issuer;
    the ``FORGE_*`` environment of a ``forge-api`` on them, with ``FORGE_TOKEN`` a token for its requests."""
    started: list[ServiceProcess] = []
    try:
        postgres = start_postgres(tmp / "postgres")
        started.append(postgres)
        if postgres_cpu is not None and postgres.pid > 0:  # its backends, forked later, inherit it
            pin(postgres.pid, postgres_cpu)
        nats = start_nats(tmp / "nats")
        started.append(nats)
        s3 = start_s3(tmp / "s3")
        started.append(s3)
        issuer = start_issuer(tmp / "issuer")
        started.append(issuer)
        token = LocalIssuer(tmp / "issuer", issuer.url.split("/realms/", 1)[0]).mint(
            "bench", ("developer", "operator", "service-account")
        )
        yield {
            "FORGE_AUTH__ISSUER": issuer.url,
            "FORGE_AUTH__AUDIENCE": issuer.extra["audience"],
            "FORGE_TOKEN": token,  # what the benchmark's own requests send (forge-api ignores it)
            "FORGE_DATABASE__URL": create_database(postgres.url, f"bench_{uuid.uuid4().hex[:12]}"),
            "FORGE_NATS__URL": nats.url,
            "FORGE_OBJECTS__ENDPOINT": s3.url,
            "FORGE_OBJECTS__ACCESS_KEY": s3.extra["access_key"],
            "FORGE_OBJECTS__SECRET_KEY": s3.extra["secret_key"],
            "FORGE_OBJECTS__BUCKET": "bench",
            "FORGE_GIT__CACHE_DIR": str(tmp / "git-cache"),
            "FORGE_CI__WORK_DIR": str(tmp / "work"),
            "FORGE_API__ALLOW_LOCAL_CLONE_URLS": "true",
        }
    finally:
        for proc in reversed(started):
            proc.stop()

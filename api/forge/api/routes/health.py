"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get

from forge.api.services import Services
from forge.errors import ForgeError

__all__ = ["healthz", "readyz"]

_CHECK_TIMEOUT = 3.0


@get("/healthz", summary="The process is alive", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="PostgreSQL, NATS and object storage answer", tags=["health"])
async def readyz(services: Services) -> Response[dict[str, Any]]:
    checks = {"database": services.database.ping, "nats": services.bus.ping, "objects": services.objects.ping}
    results = await asyncio.gather(*(_check(fn) for fn in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ok = all(v == "ok" for v in report.values())
    return Response({"status": "ok" if ok else "unavailable", "checks": report}, status_code=200 if ok else 503)


async def _check(fn: Any) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await fn()
    except (ForgeError, TimeoutError, OSError) as exc:
        return f"error: {exc}"
    return "ok"

"""Process lifecycle shared by every long-running service: logging, signals, a deadline on stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

__all__ = ["configure_logging", "run_service"]

log = logging.getLogger("forge.runtime")


def configure_logging(name: str) -> None:
    level = os.environ.get("FORGE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {name}[%(process)d] %(name)s: %(message)s",
    )


def run_service(main: Callable[[asyncio.Event], Awaitable[None]], *, grace: float = 15.0) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM/SIGINT set ``stop``; after ``grace`` s it is cancelled."""

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

    return asyncio.run(_runner())

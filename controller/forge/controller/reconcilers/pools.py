"""Every worker pool in use has its consumers before any of its workers runs, so a pool can scale to zero.

KEDA scales a pool's workers on its consumers' lag (NATS monitoring, per consumer). A consumer nobody
created has no lag, so a pool at zero workers whose consumers a worker never made would never wake up
while its jobs wait in the stream. Every ``interval`` this reconciler reads the pools of the registered
repositories (``RepositoryStore.pools``, plus ``default``) and creates, for each job type a pool's
workers serve, the consumer a worker of that pool would create (``forge.jobs.consumers``) if its stream
does not hold it. A repository registered in or moved to a new pool has its consumers within one pass.

It only creates: a consumer that exists is the workers' (a worker brings it to its own ``ack_wait`` and
``max_deliver`` at start), so a controller and a worker configured differently do not undo each other
(but for a worker creating the consumer between this pass's listing and its creation; the worker's next
start corrects it, and with the settings in ``forge-config`` both carry the same values anyway).
Consumers of pools no repository is in any more are left alone: their jobs may still be queued, and
removing a consumer is an operator's decision (docs/deploy.md, "Worker pools").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from forge.domain.messages import DEFAULT_POOL
from forge.errors import ForgeError
from forge.jobs.consumers import POOL_JOB_TYPES, JobConsumer, consumer_config, ensure_consumer, missing_consumers
from forge.ports import MessageBus, RepositoryStore
from forge.settings import WorkerSettings

__all__ = ["PoolConsumers"]

log = logging.getLogger("forge.controller.pools")


@dataclass
class PoolConsumers:
    repositories: RepositoryStore
    bus: MessageBus
    settings: WorkerSettings
    """The workers' settings (``ack_wait``, ``max_deliver``) the consumers are created with."""
    interval: float = 5.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.ensure_all()
            except ForgeError as exc:
                log.warning("pool consumers not ensured yet: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def ensure_all(self) -> list[JobConsumer]:
        """Create the missing consumers of every pool in use; the ones created."""
        pools = sorted({DEFAULT_POOL, *await self.repositories.pools()})
        wanted = [consumer_config(t, pool, self.settings) for pool in pools for t in POOL_JOB_TYPES]
        created = await missing_consumers(self.bus, wanted)
        for consumer in created:
            await ensure_consumer(self.bus, consumer)
            log.info("created consumer %s on %s (filter %s)", consumer.name, consumer.stream, consumer.filter_subject)
        return created

"""The durable consumer of one (job type, worker pool): defined here once, created by two processes.

A worker of pool ``p`` creates its consumer at start (``Worker.prepare``), and the controller creates the
consumers of every pool a repository is registered in (``forge.controller.reconcilers.pools``), so a pool's
jobs show as lag (what KEDA scales on) before any worker of the pool ever ran. Both call
:func:`ensure_consumer` with :func:`consumer_config`, so the consumer is the same whoever made it.

``ack_wait`` and ``max_deliver`` are ``FORGE_WORKER__ACK_WAIT`` and ``FORGE_WORKER__MAX_DELIVER`` (the
``worker`` group of the settings every process reads): the worker also acts on them (its claim lease, its
last delivery before the DLQ), so it is the worker's values the consumer must carry. Set them where every
process reads them (the ``forge-config`` ConfigMap), never on one Deployment. Should they differ anyway, the
worker wins: ``MessageBus.ensure_consumer`` updates an existing consumer's ``ack_wait``, ``max_deliver`` and
filter in place (JetStream's create-or-update), the worker calls it at every start, and the controller only
creates consumers that are missing (``missing_consumers``), never rewriting one a worker configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from forge.domain.messages import DEFAULT_POOL, STREAM_OF, JobType, pool_filter
from forge.ports import MessageBus
from forge.settings import WorkerSettings

__all__ = [
    "POOL_JOB_TYPES",
    "JobConsumer",
    "consumer_config",
    "consumer_name",
    "ensure_consumer",
    "missing_consumers",
]

#: The job types every worker pool serves (``forge-worker``'s handlers; deploy jobs have no worker).
POOL_JOB_TYPES: tuple[JobType, ...] = (JobType.DISCOVERY, JobType.CI, JobType.ARTIFACT, JobType.RELEASE)


def consumer_name(job_type: JobType, pool: str = DEFAULT_POOL) -> str:
    """``<type>-consumer`` for the default pool (its name before pools), ``<type>-<pool>-consumer`` otherwise."""
    return f"{job_type.value}-consumer" if pool == DEFAULT_POOL else f"{job_type.value}-{pool}-consumer"


@dataclass(frozen=True, slots=True)
class JobConsumer:
    """A durable pull consumer with explicit acks on a job stream."""

    stream: str
    name: str
    filter_subject: str
    ack_wait: float
    max_deliver: int


def consumer_config(job_type: JobType, pool: str, settings: WorkerSettings) -> JobConsumer:
    """The consumer of ``pool``'s jobs of ``job_type``: filtered on ``<type prefix>.<pool>.>`` (its jobs only),
    with the workers' ``ack_wait`` and ``max_deliver``. ``ValueError`` for a pool that is not a pool name."""
    return JobConsumer(
        stream=STREAM_OF[job_type],
        name=consumer_name(job_type, pool),
        filter_subject=pool_filter(job_type, pool),
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver,
    )


async def ensure_consumer(bus: MessageBus, consumer: JobConsumer) -> None:
    """Create ``consumer``, or bring an existing one of that name to this configuration."""
    await bus.ensure_consumer(
        consumer.stream,
        consumer.name,
        filter_subject=consumer.filter_subject,
        ack_wait=consumer.ack_wait,
        max_deliver=consumer.max_deliver,
    )


async def missing_consumers(bus: MessageBus, consumers: Iterable[JobConsumer]) -> list[JobConsumer]:
    """Those of ``consumers`` their stream does not hold (one listing per stream)."""
    wanted = list(consumers)
    existing = {stream: set(await bus.consumer_lag(stream)) for stream in sorted({c.stream for c in wanted})}
    return [c for c in wanted if c.name not in existing[c.stream]]

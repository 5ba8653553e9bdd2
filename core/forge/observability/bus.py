"""JetStream in metrics: dispatch latency, consumer lag of the work-queue streams, DLQ depth.

Lag is read from each stream's bounds (``MessageBus.stream_bounds``): a work-queue stream keeps a
message until its consumer acks it, so the messages it holds are the jobs (or step events) queued
or in flight. A job stream has one durable consumer per worker pool (``<type>-consumer`` for the
default pool, ``<type>-<pool>-consumer`` for another), whose lag — jobs of that pool queued or in
flight, ``MessageBus.consumer_lag`` — is what KEDA scales the pool's workers on:
``forge_jetstream_consumer_lag{stream, consumer, pool}``. Jobs of a pool no worker ever served have no
consumer yet: they count in the stream's pending messages only. The DLQ (limits retention, 7 days)
holds what was dead-lettered in that time: an alert watches it grow.
"""

from __future__ import annotations

import functools

from prometheus_client import Gauge, Histogram

from forge.domain.messages import DEFAULT_POOL, STREAM_OF, STREAMS
from forge.errors import ForgeError
from forge.ports.bus import MessageBus

__all__ = [
    "CONSUMER_LAG",
    "DISPATCH_DURATION",
    "DLQ_MESSAGES",
    "DLQ_STREAM",
    "STREAM_PENDING",
    "dispatch_duration",
    "pool_of_consumer",
    "sample_streams",
]

DLQ_STREAM = "pipeline-dlq"
DISPATCH_DURATION = Histogram(
    "forge_dispatch_duration_seconds",
    "Seconds from publishing a job to receiving its result (a stored result found first counts too), by job type",
    ["type"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
STREAM_PENDING = Gauge(
    "forge_jetstream_pending_messages",
    "Messages a work-queue stream holds (queued or in flight, not yet acked): the consumer lag",
    ["stream"],
)
DLQ_MESSAGES = Gauge("forge_dlq_messages", "Messages in the dead-letter stream (pipeline-dlq, kept 7 days)")
CONSUMER_LAG = Gauge(
    "forge_jetstream_consumer_lag",
    "Jobs of one worker pool queued or in flight (not acked) on a job stream, by stream, durable consumer and pool",
    ["stream", "consumer", "pool"],
)
_JOB_TYPES_OF: dict[str, tuple[str, ...]] = {}
for _type, _stream in STREAM_OF.items():
    _JOB_TYPES_OF[_stream] = (*_JOB_TYPES_OF.get(_stream, ()), _type.value)


def pool_of_consumer(stream: str, consumer: str) -> str | None:
    """The worker pool a job stream's durable consumer serves (``<type>-consumer``: the default pool,
    ``<type>-<pool>-consumer``: that pool); ``None`` for a consumer that is no worker pool's."""
    for job_type in _JOB_TYPES_OF.get(stream, ()):
        if consumer == f"{job_type}-consumer":
            return DEFAULT_POOL
        middle = consumer.removeprefix(f"{job_type}-").removesuffix("-consumer")
        if consumer.startswith(f"{job_type}-") and consumer.endswith("-consumer") and middle:
            return middle
    return None


@functools.cache
def dispatch_duration(job_type: str) -> Histogram:
    """The ``forge_dispatch_duration_seconds`` child of one job type, looked up once (``.labels()`` takes a
    lock and validates the labels on every call; a job observes its child directly)."""
    return DISPATCH_DURATION.labels(job_type)


def _stored(first: int, last: int) -> int:
    return max(0, last - first + 1)


async def sample_streams(bus: MessageBus) -> None:
    """Read every work-queue stream's and the DLQ's size into the gauges; a stream not readable is skipped."""
    for spec in STREAMS:
        if not spec.work_queue and spec.name != DLQ_STREAM:
            continue
        try:
            first, last = await bus.stream_bounds(spec.name)
        except ForgeError:
            continue
        if spec.name == DLQ_STREAM:
            DLQ_MESSAGES.set(_stored(first, last))
            continue
        STREAM_PENDING.labels(spec.name).set(_stored(first, last))
        if spec.name not in _JOB_TYPES_OF:
            continue
        try:
            lags = await bus.consumer_lag(spec.name)
        except ForgeError:
            continue
        for consumer, lag in lags.items():
            pool = pool_of_consumer(spec.name, consumer)
            if pool is not None:
                CONSUMER_LAG.labels(spec.name, consumer, pool).set(lag)

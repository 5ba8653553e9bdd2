"""JetStream in metrics: dispatch latency, consumer lag of the work-queue streams, DLQ depth.

Lag is read from each stream's bounds (``MessageBus.stream_bounds``): a work-queue stream keeps a
message until its consumer acks it, so the messages it holds are the jobs (or step events) queued
or in flight, which is the lag KEDA scales the workers on. The DLQ (limits retention, 7 days) holds
what was dead-lettered in that time: an alert watches it grow.
"""

from __future__ import annotations

import functools

from prometheus_client import Gauge, Histogram

from forge.domain.messages import STREAMS
from forge.errors import ForgeError
from forge.ports.bus import MessageBus

__all__ = [
    "DISPATCH_DURATION",
    "DLQ_MESSAGES",
    "DLQ_STREAM",
    "STREAM_PENDING",
    "dispatch_duration",
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
        else:
            STREAM_PENDING.labels(spec.name).set(_stored(first, last))

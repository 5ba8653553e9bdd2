"""Worker jobs: started, finished by outcome, durations, in flight, per job type.

Outcomes: ``success``, ``failed`` (a failed result: permanent error or last delivery), ``retried``
(nak'd for another delivery), ``cancelled``, ``duplicate`` (a redelivered job that already had a
result). CI jobs in flight are the steps in flight.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["JOBS_FINISHED", "JOBS_IN_FLIGHT", "JOBS_STARTED", "JOB_DURATION", "JobOutcome", "observe_job"]

JOBS_STARTED = Counter("forge_worker_jobs_started", "Jobs a worker started handling, by job type", ["type"])
JOBS_FINISHED = Counter(
    "forge_worker_jobs_finished", "Jobs a worker finished handling, by job type and outcome", ["type", "outcome"]
)
JOB_DURATION = Histogram(
    "forge_worker_job_duration_seconds",
    "Seconds a worker spent on one delivery of a job, by job type and outcome",
    ["type", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800),
)
JOBS_IN_FLIGHT = Gauge("forge_worker_jobs_in_flight", "Jobs being handled now, by job type", ["type"])


@dataclass
class JobOutcome:
    """What :func:`observe_job` records when the block ends; the handler's code sets it."""

    outcome: str = "failed"


@functools.cache
def _of_type(job_type: str) -> tuple[Counter, Gauge]:
    """The labelled children of a job type, looked up once (``.labels()`` locks and validates per call)."""
    return JOBS_STARTED.labels(job_type), JOBS_IN_FLIGHT.labels(job_type)


@functools.cache
def _of_outcome(job_type: str, outcome: str) -> tuple[Counter, Histogram]:
    return JOBS_FINISHED.labels(job_type, outcome), JOB_DURATION.labels(job_type, outcome)


@contextmanager
def observe_job(job_type: str) -> Iterator[JobOutcome]:
    """Count a job started, in flight while the block runs, and finished with the outcome set inside."""
    result = JobOutcome()
    started_total, in_flight = _of_type(job_type)
    started_total.inc()
    in_flight.inc()
    started = time.perf_counter()
    try:
        yield result
    finally:
        in_flight.dec()
        finished, duration = _of_outcome(job_type, result.outcome)
        finished.inc()
        duration.observe(time.perf_counter() - started)

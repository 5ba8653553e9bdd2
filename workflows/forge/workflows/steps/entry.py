"""The step container's entry function, shared by the ``forge-step`` executable and the local engine.

The local workflow engine calls :func:`run_step` in-process with its own connected bus, so a
task costs no interpreter start; ``forge-step`` (what Argo runs) calls it with a fresh one.
Streams are the controller's to create (once, at its start), not every step's.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from forge.domain.messages import DEFAULT_POOL, Job, JobType, Payload
from forge.errors import ForgeError
from forge.jobs.dispatch import Dispatcher, dispatch
from forge.ports import MessageBus
from forge.settings import TimeoutSettings

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "StepOutcome", "run_step"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class StepOutcome:
    exit_code: int
    stdout: str
    stderr: str


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="forge-step", description="Catalyst Forge step container")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("dispatch", help="publish one job and wait for its result")
    d.add_argument("--job-type", required=True, choices=[t.value for t in JobType])
    d.add_argument("--key", required=True, help="idempotency key, e.g. discovery.<run id>")
    d.add_argument("--run-id", required=True, type=UUID)
    d.add_argument("--repository", required=True)
    d.add_argument("--commit", required=True)
    d.add_argument("--pool", default=DEFAULT_POOL, help="the worker pool that runs the job (its repository's)")
    d.add_argument("--payload", required=True, help="JSON payload of the job type")
    d.add_argument("--timeout", type=float, help="seconds to wait; the job type's default when omitted")
    d.add_argument("--output", type=Path, help="also write the result JSON here")
    return parser


_PARSER = _parser()  # built once: the local engine parses a command line per step
_PAYLOAD: TypeAdapter[Payload] = TypeAdapter(Payload)


def parse_job(argv: Sequence[str], timeouts: TimeoutSettings) -> tuple[Job, float, Path | None]:
    """The job a ``forge-step dispatch`` command line describes; ``_UsageError`` when it is invalid."""
    args = _PARSER.parse_args(list(argv))
    timeout = float(args.timeout or getattr(timeouts, args.job_type))
    try:
        payload = _PAYLOAD.validate_python({"type": args.job_type, **json.loads(args.payload)})
        job = Job(
            key=args.key,
            type=JobType(args.job_type),
            run_id=args.run_id,
            repository=args.repository,
            commit_sha=args.commit,
            pool=args.pool,
            payload=payload,
            deadline=datetime.now(UTC) + timedelta(seconds=timeout),
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise _UsageError(f"forge-step: invalid job: {exc}") from None
    return job, timeout, args.output


async def run_step(
    argv: Sequence[str], *, bus: MessageBus, timeouts: TimeoutSettings, dispatcher: Dispatcher | None = None
) -> StepOutcome:
    """Run one ``forge-step`` command line; never raises for bad input or a failed job.

    A long-lived caller (the local engine) passes its ``dispatcher``; ``forge-step`` sends one job.
    """
    try:
        job, timeout, output = parse_job(argv, timeouts)
    except _UsageError as exc:
        return StepOutcome(EXIT_USAGE, "", f"{exc}\n")
    try:
        if dispatcher is None:
            result = await dispatch(bus, job, timeout=timeout)
        else:
            result = await dispatcher.dispatch(job, timeout=timeout)
    except ForgeError as exc:
        return StepOutcome(EXIT_FAILED, "", f"forge-step: {exc}\n")
    text = result.model_dump_json()
    if output is not None:
        output.write_text(text)
    talk = ""
    if not result.success and result.error is not None:
        talk = f"forge-step: job {job.key} failed: {result.error.message}\n"
    return StepOutcome(EXIT_OK if result.success else EXIT_FAILED, text + "\n", talk)

"""``forge-step dispatch``: what each Argo task runs. Exit 0 on a successful result, 1 on a failed one.

The result JSON goes to stdout (and to ``--output`` when given, for an Argo output parameter);
talk goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS, Job, JobType, Payload, Result
from forge.errors import ForgeError
from forge.jobs.dispatch import dispatch
from forge.runtime import configure_logging
from forge.settings import Settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge-step", description="Catalyst Forge step container")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dispatch", help="publish one job and wait for its result")
    d.add_argument("--job-type", required=True, choices=[t.value for t in JobType])
    d.add_argument("--key", required=True, help="idempotency key, e.g. discovery.<run id>")
    d.add_argument("--run-id", required=True, type=UUID)
    d.add_argument("--repository", required=True)
    d.add_argument("--commit", required=True)
    d.add_argument("--payload", required=True, help="JSON payload of the job type")
    d.add_argument("--timeout", type=float, help="seconds to wait; the job type's default when omitted")
    d.add_argument("--output", type=Path, help="also write the result JSON here")
    return parser


def _job(args: argparse.Namespace, timeout: float) -> Job:
    payload = TypeAdapter(Payload).validate_python({"type": args.job_type, **json.loads(args.payload)})
    return Job(
        key=args.key,
        type=JobType(args.job_type),
        run_id=args.run_id,
        repository=args.repository,
        commit_sha=args.commit,
        payload=payload,
        deadline=datetime.now(UTC) + timedelta(seconds=timeout),
    )


async def _dispatch(settings: Settings, job: Job, timeout: float) -> Result:
    bus = await NatsBus.connect(settings.nats.url, connect_timeout=settings.nats.connect_timeout)
    try:
        await bus.ensure_streams(STREAMS)
        return await dispatch(bus, job, timeout=timeout)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("forge-step")
    settings = Settings()
    timeout = args.timeout or getattr(settings.timeouts, args.job_type)
    try:
        job = _job(args, timeout)
    except (ValidationError, ValueError) as exc:
        print(f"forge-step: invalid job: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(_dispatch(settings, job, timeout))
    except ForgeError as exc:
        print(f"forge-step: {exc}", file=sys.stderr)
        return EXIT_FAILED
    text = result.model_dump_json()
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    if not result.success and result.error is not None:
        print(f"forge-step: job {job.key} failed: {result.error.message}", file=sys.stderr)
    return EXIT_OK if result.success else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

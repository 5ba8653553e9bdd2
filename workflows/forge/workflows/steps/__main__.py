"""``forge-step dispatch``: what each Argo task runs. Exit 0 on a successful result, 1 on a failed
one, 2 on invalid arguments. The result JSON goes to stdout (and to ``--output`` when given, for an
Argo output parameter); talk goes to stderr."""

from __future__ import annotations

import asyncio
import sys

from forge.adapters.nats_bus import NatsBus
from forge.errors import ForgeError
from forge.jobs.nats_permissions import STEP_INBOX
from forge.runtime import configure_logging, load_settings
from forge.settings import Settings
from forge.workflows.steps.entry import EXIT_FAILED, StepOutcome, run_step

__all__ = ["main"]


async def _main(argv: list[str], settings: Settings) -> StepOutcome:
    try:
        bus = await NatsBus.from_settings(settings.nats, inbox_prefix=STEP_INBOX)  # user forge-step
    except ForgeError as exc:
        return StepOutcome(EXIT_FAILED, "", f"forge-step: {exc}\n")
    try:
        return await run_step(argv, bus=bus, timeouts=settings.timeouts)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    configure_logging("forge-step")
    outcome = asyncio.run(_main(sys.argv[1:] if argv is None else argv, load_settings("forge-step")))
    sys.stdout.write(outcome.stdout)
    sys.stderr.write(outcome.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())

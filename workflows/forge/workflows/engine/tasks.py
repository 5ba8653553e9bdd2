"""A DAG task running a container template: its attempts, retries and backoff on this machine."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase
from forge.workflows.engine.containers import Outcome, run_attempt
from forge.workflows.engine.nodes import Node, now
from forge.workflows.engine.plans import TaskPlan

if TYPE_CHECKING:
    from forge.workflows.engine.level import DagLevel

__all__ = ["run_container"]


async def run_container(level: DagLevel, task: TaskPlan, node: Node) -> Outcome | None:
    """Run ``task``'s attempts under ``level``'s slots; its final outcome (None: omitted, already ended).

    ``retryStrategy``: a retryable outcome is retried ``limit`` times after the backoff delay,
    unless ``maxDuration`` (from the first attempt's start) would be exceeded. A fail-fast of the
    DAG observed when a slot is obtained, before the first attempt, omits the task.
    """
    ctx = level.ctx
    loop = asyncio.get_running_loop()
    first_start = loop.time()
    retries = 0
    while True:
        async with level.slot():
            if node.attempts == 0 and (culprit := level.fail_fast_by()) is not None:
                node.end(NodePhase.OMITTED, f"omitted: fail fast: task '{culprit}' failed")
                ctx.notify()
                return None
            if node.attempts == 0:
                node.phase, node.started_at, first_start = NodePhase.RUNNING, now(), loop.time()
            node.attempts += 1
            ctx.notify()
            try:
                attempt = task.render(level.task_scope(), retries)
            except InvalidInputError as exc:
                return Outcome(NodePhase.ERROR, str(exc), None, "")
            outcome = await run_attempt(attempt, step_runner=ctx.step_runner, kill_grace=ctx.kill_grace)
        retry = attempt.retry
        if not retry.retries_on(outcome.phase) or retries >= retry.limit:
            return outcome
        retries += 1
        delay = retry.delay(retries)
        if retry.max_duration is not None and loop.time() - first_start + delay > retry.max_duration:
            return Outcome(outcome.phase, "Max duration limit exceeded", outcome.exit_code, outcome.stdout)
        node.message = outcome.message
        ctx.notify()
        await asyncio.sleep(delay)

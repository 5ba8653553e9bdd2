"""Running one attempt of a container template on this machine.

``forge-step ...`` goes to the in-process step runner when one is given (no interpreter start);
anything else runs as a subprocess in its own session/process group, with the container's env
values laid over this process's environment. When the main process ends, whatever it left in
its group is killed, as when a pod's container exits. A deadline or a cancellation (``stop``,
workflow deadline, engine shutdown) sends SIGTERM to the group, then SIGKILL after a grace
period. Output is read continuously and only the first 256 KiB are kept (Argo's cap for
``outputs.result``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forge.ports.engine import NodePhase
from forge.workflows.engine.spec import Attempt

__all__ = ["DEADLINE_MESSAGE", "RESULT_LIMIT", "STEP_COMMAND", "Outcome", "StepRunner", "run_attempt"]

StepRunner = Callable[[list[str]], Awaitable[tuple[int, str, str]]]
"""``await runner(argv)`` → ``(exit_code, stdout, stderr)``; argv excludes ``forge-step`` itself."""

STEP_COMMAND = "forge-step"
RESULT_LIMIT = 256 * 1024
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    phase: NodePhase
    message: str | None
    exit_code: int | None
    stdout: str


async def run_attempt(
    attempt: Attempt,
    *,
    step_runner: StepRunner | None,
    kill_grace: float,
    on_pid: Callable[[int], None] = lambda _pid: None,
) -> Outcome:
    """Run one attempt to its end; cancellation kills what it started, then propagates."""
    if step_runner is not None and attempt.argv[0] == STEP_COMMAND:
        return await _run_in_process(attempt, step_runner)
    return await _run_subprocess(attempt, kill_grace, on_pid)


def _outcome(code: int, stdout: str) -> Outcome:
    if code == 0:
        return Outcome(NodePhase.SUCCEEDED, None, 0, stdout)
    return Outcome(NodePhase.FAILED, f"Error (exit code {code})", code, stdout)


async def _run_in_process(attempt: Attempt, step_runner: StepRunner) -> Outcome:
    try:
        async with asyncio.timeout(attempt.deadline):
            code, stdout, _stderr = await step_runner(attempt.argv[1:])
    except TimeoutError:
        return Outcome(NodePhase.FAILED, DEADLINE_MESSAGE, None, "")
    except Exception as exc:  # noqa: BLE001 - the step's own bug fails its node (Argo: Error), not the engine
        _log.exception("in-process %s %s raised", STEP_COMMAND, attempt.argv[1:2])
        return Outcome(NodePhase.ERROR, f"{STEP_COMMAND} raised {type(exc).__name__}: {exc}", None, "")
    return _outcome(code, _truncate(stdout.encode()).decode(errors="replace"))


async def _run_subprocess(attempt: Attempt, kill_grace: float, on_pid: Callable[[int], None]) -> Outcome:
    try:
        proc = await asyncio.create_subprocess_exec(
            *attempt.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **attempt.env},
            cwd=attempt.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome(NodePhase.ERROR, f"failed to start {attempt.argv[0]!r}: {exc}", None, "")
    on_pid(proc.pid)
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = bytearray(), bytearray()
    drains = asyncio.gather(_drain(proc.stdout, stdout), _drain(proc.stderr, stderr))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(attempt.deadline):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _terminate(proc, kill_grace)
    except asyncio.CancelledError:
        await _terminate(proc, kill_grace)
        await drains
        raise
    _killpg(proc.pid, signal.SIGKILL)  # what the main process left behind dies with the "container"
    await drains
    if timed_out:
        return Outcome(NodePhase.FAILED, DEADLINE_MESSAGE, proc.returncode, stdout.decode(errors="replace"))
    assert proc.returncode is not None
    return _outcome(proc.returncode, stdout.decode(errors="replace"))


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        if len(into) < RESULT_LIMIT:
            into += chunk[: RESULT_LIMIT - len(into)]


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; wait for the main process."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        pass
    finally:
        _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _truncate(data: bytes) -> bytes:
    return data[:RESULT_LIMIT]

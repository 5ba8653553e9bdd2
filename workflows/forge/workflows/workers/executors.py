"""How a CI step becomes a process, and how that process is run, watched and stopped.

* ``run`` steps: ``/bin/sh -c '<target> <args...>'``. The target is a shell command line (what a
  developer writes in ``project.yaml``); each arg is appended shell-quoted, so an arg is always
  one word, never code.
* ``earthly`` steps: ``earthly <flags> --secret NAME... +<target> <args...>``. ``--secret NAME``
  without ``=value`` makes Earthly read the value from the environment variable ``NAME``, so no
  secret value is ever in an argv (``ps`` shows argv to every user of the machine).
* The process gets its own session (process group); stdout and stderr share one pipe, read as
  bytes arrive. A timeout sends SIGTERM to the whole group, SIGKILL after a grace, and counts as
  exit code 124 (``timeout(1)``'s). Whatever the step leaves running when its main process
  exits is killed too.
* On Linux the step runs under ``forge.workflows.workers.reaper`` (a subreaper with a parent-death
  signal), so its whole tree, ``setsid`` escapees included, dies when the step ends, when it is
  stopped, and when the worker dies (even by SIGKILL). The reaper is forked by the worker's
  zygote (``forge.workflows.workers.zygote``: one ``python -I -S reaper.py --zygote`` per worker
  process); when no zygote can start, each step starts ``python -I -S reaper.py`` itself.
  Stopping asks the reaper first (``SIGUSR1``), then SIGKILLs the group.
* ``SecretMasker`` replaces every secret value with ``***`` before output reaches the log,
  across chunk boundaries: it holds back the longest tail of the output that is a prefix of
  some secret until the next chunk decides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from forge.workflows.workers import zygote

__all__ = [
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "SecretMasker",
    "Sink",
    "StepOutcome",
    "StepProcess",
    "earthly_argv",
    "execute",
    "run_argv",
]

EXIT_TIMEOUT = 124
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
MASK = b"***"
_MIN_LINE_SECRET = 4  # lines of a multi-line secret shorter than this are not masked on their own
_READ_SIZE = 64 * 1024
_DRAIN_SECONDS = 5.0
_REAPER_GRACE = 5.0  # seconds the reaper gets to kill a tree before its group is SIGKILLed
_KILL_TREE = signal.SIGUSR1  # forge.workflows.workers.reaper.KILL_TREE (that module is a script)
_REAPER = Path(__file__).with_name("reaper.py")

Sink = Callable[[bytes], Awaitable[None]]


class _Process(Protocol):
    """What ``execute`` uses of a step's process: an ``asyncio`` one, or a zygote-forked reaper."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    async def wait(self) -> int: ...
    def kill(self) -> None: ...


_REAPER_USABLE = sys.platform == "linux" and _REAPER.is_file()


def run_argv(target: str, args: Sequence[str]) -> list[str]:
    """``/bin/sh -c`` with the target as a command line and every arg appended as one quoted word."""
    return ["/bin/sh", "-c", " ".join([target, *(shlex.quote(a) for a in args)])]


def earthly_argv(
    earthly: str, target: str, args: Sequence[str], *, secrets: Iterable[str], flags: Sequence[str]
) -> list[str]:
    """``earthly <flags> --secret NAME ... +<target> <args>``; a target already naming a ``+`` is kept."""
    ref = target if "+" in target else f"+{target}"
    secret_flags = [flag for name in secrets for flag in ("--secret", name)]
    return [earthly, *flags, *secret_flags, ref, *args]


class SecretMasker:
    """Turn a byte stream into the same stream with every secret value replaced by ``***``."""

    def __init__(self, secrets: Iterable[str]):
        values: set[bytes] = set()
        for secret in secrets:
            if not secret:
                continue
            values.add(secret.encode())
            if "\n" in secret:  # a program may print a multi-line secret line by line
                values.update(
                    line.encode() for line in secret.replace("\r", "").split("\n") if len(line) >= _MIN_LINE_SECRET
                )
        self._secrets = sorted(values, key=len, reverse=True)  # longest first: no partial masking
        self._longest = len(self._secrets[0]) if self._secrets else 0
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """Masked output that is safe to emit now; a possible start of a secret is kept back."""
        if not self._secrets:
            return data
        text = self._mask(self._held + data)
        keep = self._pending_prefix(text)
        self._held = text[len(text) - keep :] if keep else b""
        return text[: len(text) - keep]

    def flush(self) -> bytes:
        """Whatever is held back, masked: call once the stream has ended."""
        text, self._held = self._mask(self._held), b""
        return text

    def _mask(self, text: bytes) -> bytes:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _pending_prefix(self, text: bytes) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a secret."""
        for size in range(min(self._longest - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._secrets):
                return size
        return 0


@dataclass(frozen=True, slots=True)
class StepProcess:
    argv: list[str]
    cwd: Path
    env: Mapping[str, str]
    timeout: float
    user: tuple[int, int] | None = None  # (uid, gid) the step runs as; None: the worker's


@dataclass(frozen=True, slots=True)
class StepOutcome:
    exit_code: int | None  # None: the step never started (a missing secret, no project directory)
    message: str
    timed_out: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0


async def execute(step: StepProcess, sink: Sink, *, kill_grace: float = 10.0) -> StepOutcome:
    """Run ``step``, passing its merged output to ``sink`` as it arrives; the outcome when it ends.

    ``sink`` also receives ``forge:`` lines for what the worker did (timeout, kills, a missing
    executable). Cancelling the coroutine kills the whole process group.
    """
    try:
        proc = await _spawn(step)
    except FileNotFoundError:
        message = f"executable {step.argv[0]!r} not found"
        await sink(f"forge: {message}\n".encode())
        return StepOutcome(EXIT_NOT_FOUND, message)
    except PermissionError:
        message = f"{step.argv[0]!r} is not executable"
        await sink(f"forge: {message}\n".encode())
        return StepOutcome(EXIT_NOT_EXECUTABLE, message)

    assert proc.stdout is not None
    stdout = proc.stdout

    async def pump() -> None:
        while chunk := await stdout.read(_READ_SIZE):
            await sink(chunk)

    started = time.monotonic()
    timed_out = False
    try:
        async with asyncio.TaskGroup() as tasks:
            reading = tasks.create_task(pump())
            try:
                async with asyncio.timeout(step.timeout):
                    returncode = await proc.wait()
            except TimeoutError:
                timed_out = True
                returncode = await _terminate(proc, kill_grace)
            # leftovers would keep the pipe open, and nothing may outlive its step
            if _kill_group(proc.pid, signal.SIGKILL) and not timed_out:
                await sink(b"forge: killed processes the step left running\n")
            _, still_reading = await asyncio.wait({reading}, timeout=_DRAIN_SECONDS)
            if still_reading:  # a process that left the group still holds the pipe
                reading.cancel()
    finally:
        if proc.returncode is None:  # cancelled: stop everything
            await asyncio.shield(_kill(proc))
        _kill_group(proc.pid, signal.SIGKILL)
        if isinstance(proc, zygote.ReapedStep):
            proc.close()

    return await _outcome(returncode, time.monotonic() - started, step.timeout if timed_out else None, sink)


async def _outcome(returncode: int, elapsed: float, timed_out_after: float | None, sink: Sink) -> StepOutcome:
    if timed_out_after is not None:
        message = f"timed out after {timed_out_after:g}s; the process group was killed"
        await sink(f"\nforge: step {message}\n".encode())
        return StepOutcome(EXIT_TIMEOUT, message, timed_out=True)
    if returncode < 0:
        message = f"killed by {signal.Signals(-returncode).name}"
        await sink(f"\nforge: step {message} after {elapsed:.1f}s\n".encode())
        return StepOutcome(128 - returncode, message)
    if returncode == 0:
        return StepOutcome(0, f"succeeded in {elapsed:.1f}s")
    message = f"exited with code {returncode}"
    if returncode == EXIT_NOT_FOUND:
        message += " (command not found)"
    await sink(f"\nforge: step {message} after {elapsed:.1f}s\n".encode())
    return StepOutcome(returncode, message)


async def _spawn(step: StepProcess) -> _Process:
    """The step's process: its reaper (Linux), which runs ``step.argv``, or ``step.argv`` itself."""
    if not _REAPER_USABLE:
        return await asyncio.create_subprocess_exec(
            *step.argv,
            cwd=step.cwd,
            env=dict(step.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            user=None if step.user is None else step.user[0],
            group=None if step.user is None else step.user[1],
            extra_groups=None if step.user is None else [],
        )
    if not step.cwd.is_dir():  # what the direct spawn raises, before anything runs
        raise FileNotFoundError(step.cwd)
    forked = await zygote.spawn(step.argv, step.env, step.cwd, step.user)
    if forked is not None:
        return forked
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        str(_REAPER),
        cwd=step.cwd,
        env={},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdin is not None
    spec = {"argv": list(step.argv), "env": dict(step.env), "parent": os.getpid(), "user": step.user}
    proc.stdin.write(marshal.dumps(spec))
    with contextlib.suppress(ConnectionError):  # it died at start; its exit code says why
        await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def _terminate(proc: _Process, grace: float) -> int:
    """SIGTERM the group, kill everything after ``grace`` seconds; the main process's return code."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            return await proc.wait()
    except TimeoutError:
        return await _kill(proc)


async def _kill(proc: _Process) -> int:
    """Have the reaper kill the step's whole tree; SIGKILL the group when it does not in time."""
    if _REAPER_USABLE:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, _KILL_TREE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAPER_GRACE):
                return await proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return await proc.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal every process of the group; ``False`` when none is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True

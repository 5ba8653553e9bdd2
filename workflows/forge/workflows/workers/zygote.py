"""The worker's side of the reaper zygote: one ``reaper.py --zygote`` per worker process, forking a
reaper per step, so the interpreter starts once per worker instead of once per step.

``spawn`` gives ``execute`` what it needs of a process (``pid``, ``stdout``, ``wait()``,
``returncode``, ``kill()``) for a step run under a reaper forked by the zygote; ``None`` when
the zygote cannot start (it is logged once, and the caller starts a reaper per step as before).
The zygote starts on the first step and again on the next step after it died; concurrent steps
share it (requests and replies carry an id). It is bound to the event loop that started it: a
step on another loop replaces it (the old one exits when its socket closes).

The protocol is in ``reaper.py``: a request is a 4-byte big-endian length and a ``marshal``-ed
``{"id", "argv", "env", "cwd"}`` sent with the write end of the step's output pipe
(``SCM_RIGHTS``); replies are ``{"ready"}`` or ``{"error"}`` once, then ``{"id", "pid"}`` and
``{"id", "status"}`` (a raw wait status) per step. A zygote that dies mid-step takes every step
reaper with it (their parent-death signal kills their trees); their steps end as SIGKILLed once
the reapers are gone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ReapedStep", "Zygote", "ZygoteLostError", "ZygoteUnavailableError", "spawn"]

_log = logging.getLogger(__name__)

_START_SECONDS = 10.0  # the zygote's start-up: an interpreter, ctypes, one prctl
_ORPHAN_SECONDS = 5.0  # a lost zygote's step reaper gets this long to kill its tree and exit
_HEADER = 4
_REAPER = Path(__file__).with_name("reaper.py")


class ZygoteUnavailableError(Exception):
    """The zygote could not start (a refused ``prctl``, no interpreter): steps start their own reapers."""


class ZygoteLostError(ConnectionError):
    """The zygote died before it forked the step's reaper: the step did not start."""


class ReapedStep:
    """A step run by a reaper the zygote forked: what ``execute`` uses of an ``asyncio`` process."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self.pid = pid  # the step reaper's: the step's process group id
        self.stdout = stdout
        self.returncode: int | None = None
        self._transport = transport
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        """The step's return code, as ``asyncio.subprocess`` gives it (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop reading the output pipe (it is closed at end of output anyway)."""
        self._transport.close()

    def _set_status(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(status)
            self._exited.set_result(self.returncode)

    async def _orphaned(self) -> None:
        """The zygote died: its SIGUSR1 makes this reaper kill the tree; done when the reaper is gone."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_ORPHAN_SECONDS):
                await _gone(self.pid)
        self._set_status(signal.SIGKILL)  # the wait status of a process killed by SIGKILL


class Zygote:
    """One ``reaper.py --zygote`` process and the socket to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, script: Path = _REAPER) -> None:
        self.loop = loop
        self.owner = os.getpid()
        self._script = script
        self._popen: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._ready: asyncio.Future[int] = loop.create_future()
        self._started: asyncio.Task[int] | None = None
        self._sending = asyncio.Lock()
        self._next_id = 0
        self._forking: dict[int, asyncio.Future[int]] = {}
        self._steps: dict[int, ReapedStep] = {}
        self._early: dict[int, int] = {}  # statuses that came before their step was registered
        self._abandoned: set[int] = set()  # steps whose caller was cancelled while the zygote forked
        self._orphans: set[asyncio.Task[None]] = set()
        self.alive = True

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    async def start(self) -> int:
        """Start the zygote once (concurrent callers share the start); its pid."""
        if self._started is None:
            self._started = self.loop.create_task(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> int:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # from the loop's thread: the zygote's parent-death signal follows the thread that forked it
            self._popen = subprocess.Popen(  # noqa: ASYNC220 - once per worker; forks from the loop's thread
                [sys.executable, "-I", "-S", str(self._script), "--zygote", str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={},
                start_new_session=True,  # the worker's group signals are not the zygote's
            )
        except OSError as error:
            mine.close()
            self.alive = False
            raise ZygoteUnavailableError(f"cannot start {self._script.name}: {error}") from error
        finally:
            theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self.loop.add_reader(mine.fileno(), self._readable)
        try:
            async with asyncio.timeout(_START_SECONDS):
                return await asyncio.shield(self._ready)
        except (TimeoutError, ZygoteLostError, ZygoteUnavailableError) as error:
            self.close()
            if isinstance(error, ZygoteUnavailableError):
                raise
            raise ZygoteUnavailableError(f"{self._script.name} --zygote did not start: {error!r}") from error

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, user: tuple[int, int] | None = None
    ) -> ReapedStep:
        """Have the zygote fork a reaper running ``argv`` in ``cwd`` (as ``user``: uid, gid); its output
        on a new pipe."""
        await self.start()
        self._next_id += 1
        ident = self._next_id
        request = marshal.dumps({"id": ident, "argv": list(argv), "env": dict(env), "cwd": str(cwd), "user": user})
        read_end, write_end = os.pipe()
        forked: asyncio.Future[int] = self.loop.create_future()
        self._forking[ident] = forked
        try:
            try:
                await self._send(len(request).to_bytes(_HEADER, "big") + request, write_end)
            finally:
                os.close(write_end)  # the step reaper holds the only write end: end of output is its tree's end
            pid = await asyncio.shield(forked)
        except BaseException:
            os.close(read_end)
            if not forked.done():  # cancelled while the zygote forks: stop the step when it has started
                forked.add_done_callback(lambda done: self._abandon(ident, done))
            raise
        finally:
            self._forking.pop(ident, None)
        reader = asyncio.StreamReader(loop=self.loop)
        pipe = os.fdopen(read_end, "rb", 0)
        try:
            transport, _ = await self.loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader, loop=self.loop), pipe
            )
        except BaseException:
            pipe.close()
            raise
        step = ReapedStep(pid, reader, transport)
        if ident in self._early:
            step._set_status(self._early.pop(ident))  # noqa: SLF001 - this module's own class
        elif self.alive:
            self._steps[ident] = step
        else:
            self._orphan(step)
        return step

    def _abandon(self, ident: int, forked: asyncio.Future[int]) -> None:
        if forked.cancelled() or forked.exception() is not None:
            return
        self._early.pop(ident, None)
        self._abandoned.add(ident)
        with contextlib.suppress(ProcessLookupError):
            os.kill(forked.result(), signal.SIGUSR1)  # reaper.KILL_TREE: the reaper kills the tree

    async def _send(self, data: bytes, fd: int) -> None:
        sock = self._sock
        if sock is None or not self.alive:
            raise ZygoteLostError("the zygote is gone")
        async with self._sending:  # one request at a time: the fds go with the first byte of each
            try:
                while True:
                    try:
                        sent = socket.send_fds(sock, [data], [fd])
                        break
                    except BlockingIOError:
                        await self._writable(sock)
                if sent < len(data):
                    await self.loop.sock_sendall(sock, data[sent:])
            except OSError as error:
                self._lost()
                raise ZygoteLostError(f"the zygote is gone: {error}") from error

    async def _writable(self, sock: socket.socket) -> None:
        ready = self.loop.create_future()
        self.loop.add_writer(sock.fileno(), _set_done, ready)
        try:
            await ready
        finally:
            self.loop.remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._replies()
                self._lost()
                return
            self._buffer += data
        self._replies()

    def _replies(self) -> None:
        while len(self._buffer) >= _HEADER:
            size = int.from_bytes(self._buffer[:_HEADER], "big")
            if len(self._buffer) < _HEADER + size:
                return
            body = bytes(self._buffer[_HEADER : _HEADER + size])
            del self._buffer[: _HEADER + size]
            reply = marshal.loads(body)  # noqa: S302 - written by our own child, over a socketpair
            self._reply(reply)

    def _reply(self, reply: dict[str, object]) -> None:
        ident = reply.get("id")
        if ident is None:  # the zygote's own: ready, or why it cannot be
            if not self._ready.done():
                if "ready" in reply:
                    self._ready.set_result(int(reply["ready"]))  # type: ignore[call-overload]
                else:
                    self._ready.set_exception(ZygoteUnavailableError(str(reply.get("error"))))
        elif isinstance(ident, int) and "status" in reply:
            status = int(reply["status"])  # type: ignore[call-overload]
            step = self._steps.pop(ident, None)
            if ident in self._abandoned:
                self._abandoned.discard(ident)
            elif step is None:
                self._early[ident] = status
            else:
                step._set_status(status)  # noqa: SLF001 - this module's own class
        elif isinstance(ident, int):
            forked = self._forking.get(ident)
            if forked is None or forked.done():
                return
            if "pid" in reply:
                forked.set_result(int(reply["pid"]))  # type: ignore[call-overload]
            else:
                number = reply.get("errno")
                forked.set_exception(OSError(number if isinstance(number, int) else 0, str(reply.get("error"))))

    def _lost(self) -> None:
        """The zygote is gone (or being closed): fail what waits on it, follow what it had started."""
        if not self.alive:
            return
        self.alive = False
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._reap()
        lost = ZygoteLostError("the zygote died")
        if not self._ready.done():
            self._ready.set_exception(lost)
            self._ready.exception()  # retrieved: start() raises its own error
        for forked in self._forking.values():
            if not forked.done():
                forked.set_exception(lost)
        steps, self._steps = list(self._steps.values()), {}
        if self.loop.is_closed():
            return  # nobody waits on these any more
        for step in steps:
            self._orphan(step)

    def _orphan(self, step: ReapedStep) -> None:
        task = self.loop.create_task(step._orphaned())  # noqa: SLF001 - this module's own class
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    def _reap(self) -> None:
        popen = self._popen
        if popen is None or popen.returncode is not None:
            return
        if os.getpid() != self.owner:
            return  # a forked copy of the worker: the zygote is its parent's
        try:
            popen.wait(timeout=0.5)  # it closed the socket: it is exiting
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def close(self) -> None:
        """Close the socket: the zygote exits (its step reapers, if any, kill their trees)."""
        self._lost()


async def _gone(pid: int) -> None:
    """Until ``pid`` (not our child) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (an old kernel): poll
        while _exists(pid):  # noqa: ASYNC110 - nothing to wait on but the pid
            await asyncio.sleep(0.02)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, _set_done, exited)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _exists(pid: int) -> bool:
    try:
        with Path(f"/proc/{pid}/stat").open("rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


_current: Zygote | None = None
_unavailable: str | None = None


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, user: tuple[int, int] | None = None
) -> ReapedStep | None:
    """Run a step under a reaper forked by this process's zygote; ``None`` when there can be no zygote."""
    global _current, _unavailable  # noqa: PLW0603 - one zygote per worker process
    if _unavailable is not None:
        return None
    loop = asyncio.get_running_loop()
    for attempt in (1, 2):
        zygote = _current
        if zygote is None or not zygote.alive or zygote.loop is not loop or zygote.owner != os.getpid():
            if zygote is not None and zygote.owner == os.getpid():
                zygote.close()  # another loop's (its own loop closed): it exits
            zygote = _current = Zygote(loop, _REAPER)
            if not _exit_hook:
                atexit.register(_close_current)
                _exit_hook.append(True)
        try:
            return await zygote.spawn(argv, env, cwd, user)
        except ZygoteUnavailableError as error:
            _unavailable = str(error)
            _log.warning("reaper zygote unavailable, each step starts its own reaper: %s", error)
            return None
        except ZygoteLostError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


_exit_hook: list[bool] = []


def _close_current() -> None:
    """At exit: the zygote ends with its socket (it would die with us anyway, by its parent-death signal)."""
    zygote = current()
    if zygote is not None:
        zygote.close()


def current() -> Zygote | None:
    """This process's zygote, if one was started (tests look at its pid)."""
    zygote = _current
    return zygote if zygote is not None and zygote.owner == os.getpid() else None

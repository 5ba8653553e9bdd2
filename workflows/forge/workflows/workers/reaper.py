"""A step's supervisor: its whole process tree dies with the step, and with the worker.

Run as ``python -I -S reaper.py`` (by file path, stdlib only, so it starts in milliseconds); the
step to run comes on stdin as a ``marshal``-ed ``{"argv": [...], "env": {...}, "parent": <worker
pid>}`` (``json`` would double the start-up time; the environment never passes through this
interpreter's own, which Python may adjust).

* ``PR_SET_CHILD_SUBREAPER``: every process the step leaves orphaned (``&``, ``setsid``, a
  double fork) is re-parented to the reaper, so its descendants are always the step's whole tree.
* ``PR_SET_PDEATHSIG(SIGUSR1)``: the kernel signals the reaper when the worker dies, even by
  SIGKILL; the reaper then SIGKILLs the tree. A worker that died before the ``prctl`` is seen
  by ``getppid()`` no longer being the worker.
* SIGUSR1 from the worker (a timeout's last resort, a cancelled job) does the same.
* When the step's main process ends, whatever it left running is killed (a ``forge:`` line says
  so on stdout, which is the step's log); the reaper exits as the step did (same code, or the
  same signal), so the worker sees the step's outcome.
* The reaper stays in the step's process group: signals the worker sends to the group reach the
  step directly, and the reaper ignores them itself (``SIGTERM`` is the step's to handle).

Signals are taken with ``sigwaitinfo`` (blocked, never handled asynchronously); the step gets
the original mask and default dispositions back before ``exec`` (``SIGPIPE`` and ``SIGXFSZ``
included, which Python ignores, as ``subprocess``'s ``restore_signals`` does).
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
KILL_TREE = signal.SIGUSR1
_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_WAITED = {signal.SIGCHLD, KILL_TREE, *_IGNORED}
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)
_MAX_ROUNDS = 1000


def main() -> int:
    original = signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 or libc.prctl(_PR_SET_PDEATHSIG, KILL_TREE, 0, 0, 0) != 0:
        os.write(1, f"forge: reaper: prctl failed: {os.strerror(ctypes.get_errno())}\n".encode())
        return 125
    try:
        spec = marshal.loads(sys.stdin.buffer.read())  # noqa: S302 - written by our parent, over a pipe
    except (EOFError, ValueError, TypeError):
        return 125
    if not isinstance(spec, dict) or os.getppid() != spec.get("parent"):
        return 125  # the worker is gone already (or never spoke): run nothing
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    step = _spawn(list(spec["argv"]), dict(spec["env"]), original)
    status = _supervise(step)
    leftovers = _kill_tree()
    if status is None:  # told to stop, or the worker died: the step was killed with its tree
        status = signal.SIGKILL  # the wait status of a process killed by SIGKILL
    elif leftovers:
        try:  # noqa: SIM105 - contextlib would cost milliseconds of start-up
            os.write(1, b"forge: killed processes the step left running\n")
        except OSError:  # nobody reads any more: the worker died meanwhile
            pass
    return _exit_like(status)


def _spawn(argv: list[str], env: dict[str, str], mask: set[int | signal.Signals]) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: the step as if the worker had started it
        for ignored in _PYTHON_IGNORES:  # Python ignores these; exec would pass that on
            signal.signal(ignored, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.execvpe(argv[0], argv, env)  # noqa: S606 - the step's argv, as the worker built it
    except FileNotFoundError:
        os.write(1, f"forge: executable {argv[0]!r} not found\n".encode())
        os._exit(127)
    except PermissionError:
        os.write(1, f"forge: {argv[0]!r} is not executable\n".encode())
        os._exit(126)
    finally:
        os._exit(127)


def _supervise(step: int) -> int | None:
    """The step's wait status once its main process ends; ``None`` when told to kill the tree."""
    while True:
        info = signal.sigwaitinfo(_WAITED)
        if info.si_signo == KILL_TREE:
            return None
        if info.si_signo != signal.SIGCHLD:
            continue  # a group signal: the step got it too
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                break
            if pid == step:
                return status


def _kill_tree() -> bool:
    """SIGKILL every descendant until none is left (orphans come back to us); whether any was."""
    me = os.getpid()
    found = False
    for _ in range(_MAX_ROUNDS):
        descendants = _descendants(me)
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            found = True
        _reap()
        if not descendants:
            break
    return found


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):  # noqa: PTH208 - pathlib would add milliseconds of imports
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:  # noqa: PTH123 - as above
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _exit_like(status: int) -> int:
    """Exit with the step's code, or die of the step's signal."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else status
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig != signal.SIGKILL:  # its disposition cannot be changed (nor needs to be)
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    return 128 + sig


if __name__ == "__main__":
    sys.exit(main())

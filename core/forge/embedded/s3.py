"""A real S3-compatible server for tests and ``forge dev up``: ``rclone serve s3`` on a loopback port.

Buckets are plain directories under ``<data_dir>/data`` (``<bucket>/<key>``), so a test can look at
what was stored. rclone checks SigV4 signatures (headers and presigned URLs) against ``--auth-key``.
It keeps user metadata and content types in memory only; they do not survive a restart.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

from forge.embedded.process import ServiceProcess, binary, free_port, start_service

__all__ = ["start_s3"]


def start_s3(
    data_dir: Path,
    port: int | None = None,
    access_key: str = "forge",
    # Well-known credentials of a throwaway loopback server, never a real secret.
    secret_key: str = "forge-secret",  # noqa: S107
) -> ServiceProcess:
    """Start ``rclone serve s3`` on ``127.0.0.1:<port>``; ``extra`` holds ``access_key`` and ``secret_key``."""
    port = port or free_port()
    root = data_dir / "data"
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        binary("rclone"),
        "serve",
        "s3",
        "--auth-key",
        f"{access_key},{secret_key}",
        "--addr",
        f"127.0.0.1:{port}",
        "--force-path-style=true",  # the default today; presigned URLs and the minio client rely on it
        "--etag-hash",
        "MD5",  # S3 semantics: the ETag of a single-part object is its MD5
        str(root),
    ]
    proc = start_service(
        "rclone-s3",
        argv,
        url=f"127.0.0.1:{port}",
        ready=_http_answers(port),
        log=data_dir / "s3.log",
        env={"RCLONE_CONFIG": "/dev/null"},  # no config file: never read or write ~/.config/rclone
    )
    proc.extra.update(access_key=access_key, secret_key=secret_key)
    return proc


def _http_answers(port: int) -> Callable[[], bool]:
    """Ready once any HTTP answer comes back (an unsigned request gets 4xx, which is fine)."""

    def check() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return True

    return check

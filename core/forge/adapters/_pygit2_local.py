"""What both pygit2 adapters (source mirrors, the GitOps work copy) do on the local side of a fetch.

``fetch_source``: libgit2 is given a local repository as a path, never as a ``file://`` URL (its file
transport packs objects and is about ten times slower). ``locked``: an exclusive ``fcntl.flock`` on a
lock file beside a repository, so threads and processes sharing it take turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["SCP_LIKE", "fetch_source", "locked"]

SCP_LIKE = re.compile(r"^[^/:]+@[^/:]+:")
"""An scp-like remote: ``git@github.com:owner/repo.git``."""


def fetch_source(url: str) -> str:
    """A local path for local repositories (``file://`` included), else the URL unchanged."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if (not parsed.scheme or len(parsed.scheme) == 1) and not SCP_LIKE.match(url):  # a path
        return str(Path(url).resolve())
    return url


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path`` exclusively for the block (created, with its directory, when missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock

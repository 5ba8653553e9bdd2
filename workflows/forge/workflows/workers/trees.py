"""Commit trees shared by the CI steps of a worker (or of several workers on one work dir).

A commit is written from the mirror once, into ``<root>/<name>``; every step of that commit then
gets a private copy of it (``private_copy``) to run in, so a step can change only its own files.
The shared tree is read-only by convention: nothing but this module writes under ``<root>``.

* Named by the caller: the CI worker uses ``<sha>@<owner>+<repo>``, so a job never gets a tree
  its own repository's mirror does not hold (a sha alone would hand one repository's commit to
  a job of another that names it).
* Written once: a tree is written into ``<root>/.tmp-<name>-<random>`` and renamed into place,
  so no reader ever sees half a tree; an ``asyncio.Lock`` per name (one process) and an
  exclusive ``flock`` on ``<root>/<name>.lock`` (several processes) make one writer write it.
* In use: a job holds a shared ``flock`` on ``<name>.lock`` for as long as it uses the tree.
* Evicted least recently used (the directory's mtime is touched at each use): after each job,
  trees beyond the ``keep`` most recent unused ones are removed. A tree whose lock cannot be
  taken exclusively at once is in use (here or in another process) and is never removed.
  Eviction renames the tree away and unlinks its lock file while holding the lock; a job that
  opened the old lock file sees it was replaced (inode check) and starts over.
* The private copy is ``shutil.copytree(symlinks=True)`` in a thread (the same thread then hands it
  to the step's uid, ``then``) (symbolic links stay links,
  modes and times kept, data through ``sendfile``): 1.6 ms of CPU for the 21-file bench tree where
  ``cp -a --reflink=auto`` took 10 ms (its process plus ``--preserve=all``'s extra system calls);
  measured in ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from forge.errors import ServiceUnavailableError

__all__ = ["TreeCache", "private_copy", "remove_tree"]

_LOCK_POLL = 0.05
Materialise = Callable[[Path], Awaitable[None]]


class TreeCache:
    """``<root>/<name>`` trees, written once and kept for the ``keep`` most recently used unused ones."""

    def __init__(self, root: Path, *, keep: int):
        self.root = root
        self.keep = keep
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def use(self, name: str, materialise: Materialise) -> AsyncIterator[Path]:
        """The shared tree ``name``, written by ``materialise(dest)`` when missing; in use until exit."""
        if not name or name.startswith(".") or "/" in name or name.endswith(".lock"):
            raise ValueError(f"invalid tree name {name!r}")
        tree = self.root / name
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # one writer per process; the flock below covers other processes
            fd = await self._acquire(name, tree, materialise)
        try:
            yield tree
        finally:
            os.close(fd)  # releases the shared lock
            if not lock.locked():  # a waiter woken meanwhile still gets the flock right
                self._locks.pop(name, None)
            await asyncio.to_thread(self.evict)

    async def _acquire(self, name: str, tree: Path, materialise: Materialise) -> int:
        """A descriptor of the name's lock file holding a shared lock, with the tree in place."""
        path = self.root / f"{name}.lock"
        while True:
            fd = await asyncio.to_thread(_open_lock, path)
            try:
                await _flock(fd, fcntl.LOCK_SH)
                if _in_place(fd, path, tree):
                    return fd
                await _flock(fd, fcntl.LOCK_EX)
                if _current(fd, path):
                    if not _in_place(fd, path, tree):
                        await self._write(name, tree, materialise)
                    await _flock(fd, fcntl.LOCK_SH)  # not atomic: an evictor may come between
                    if _in_place(fd, path, tree):
                        return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # evicted meanwhile: start over with the new lock file

    async def _write(self, name: str, tree: Path, materialise: Materialise) -> None:
        for stale in self.root.glob(f".tmp-{name}-*"):  # a writer that died; we hold the lock now
            await asyncio.to_thread(remove_tree, stale)
        staging = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            await materialise(staging)
            staging.rename(tree)
        finally:
            await asyncio.to_thread(remove_tree, staging)

    def evict(self) -> list[str]:
        """Remove the unused trees beyond the ``keep`` most recently used; the names removed."""
        trees: list[tuple[float, Path]] = []
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            if entry.name.startswith(".trash-"):  # an evictor that died before it finished
                remove_tree(entry)
            elif not entry.name.startswith(".") and entry.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    trees.append((entry.stat().st_mtime, entry))
        if len(trees) <= self.keep:  # none beyond the kept ones: no lock to look at
            return []
        trees.sort(reverse=True)
        kept, removed = 0, []
        for _, tree in trees:
            if kept < self.keep:
                if _unused(self.root / f"{tree.name}.lock", tree, remove=False):
                    kept += 1
            elif _unused(self.root / f"{tree.name}.lock", tree, remove=True):
                removed.append(tree.name)
        return removed


def _unused(path: Path, tree: Path, *, remove: bool) -> bool:
    """Whether nobody uses ``tree`` (its lock is free); with ``remove``, remove it while sure."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # being written or evicted right now
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _current(fd, path) or not tree.is_dir():
            return False
        if remove:
            trash = tree.with_name(f".trash-{tree.name}-{uuid.uuid4().hex[:8]}")
            tree.rename(trash)
            path.unlink()
            os.close(fd)
            fd = -1
            remove_tree(trash)
        return True
    finally:
        if fd >= 0:
            os.close(fd)


def _in_place(fd: int, path: Path, tree: Path) -> bool:
    """Whether ``fd`` is the current lock file and the tree exists; marks the tree used now."""
    if not _current(fd, path) or not tree.is_dir():
        return False
    os.utime(tree)
    return True


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (an evictor unlinks the lock file it removes)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


async def _flock(fd: int, operation: int) -> None:
    """Take a lock without blocking the event loop (and so that cancelling the wait is safe)."""
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.sleep(_LOCK_POLL)
        else:
            return


async def private_copy(tree: Path, dest: Path, then: Callable[[Path], None] | None = None) -> None:
    """Copy ``tree`` to the new directory ``dest`` (in a thread): links stay links, modes and times kept;
    ``then(dest)`` runs in the same thread once the copy is complete (the sandbox's hand-over)."""
    try:
        await asyncio.to_thread(_copy, tree, dest, then)
    except OSError as exc:
        raise ServiceUnavailableError(f"cannot copy {tree} to {dest}: {exc}") from exc


def _copy(tree: Path, dest: Path, then: Callable[[Path], None] | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tree, dest, symlinks=True)
    if then is not None:
        then(dest)


def remove_tree(path: Path) -> None:
    """Delete a directory tree, including directories a step made read-only."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        shutil.rmtree(path)
    except OSError:
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                Path(folder).chmod(0o700)
        shutil.rmtree(path, ignore_errors=True)

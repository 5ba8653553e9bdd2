"""GitRepo: a bare mirror cache per repository, read without a checkout (DESIGN §3, §5)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

__all__ = ["EntryKind", "GitMirrors", "GitReader", "TreeEntry"]


class EntryKind(StrEnum):
    BLOB = "blob"
    EXECUTABLE = "executable"
    LINK = "link"
    TREE = "tree"
    SUBMODULE = "submodule"


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: str
    id: str
    kind: EntryKind


class GitReader(Protocol):
    """Synchronous, read-only access to one mirror; confine an instance to one thread.

    Discovery calls it thousands of times per run, so it is sync; callers run the whole
    discovery in ``asyncio.to_thread``.
    """

    def resolve(self, rev: str) -> str:
        """Commit sha of ``rev`` (sha, branch, tag); ``NotFoundError`` when unknown."""

    def commit_tree(self, commit: str) -> str:
        """Id of the root tree of ``commit``."""

    def tree_entries(self, tree_id: str) -> list[TreeEntry]:
        """Direct children of a tree, sorted by name."""

    def blob_size(self, blob_id: str) -> int: ...

    def read_blob(self, blob_id: str) -> bytes: ...

    def changed_paths(self, base: str, commit: str) -> list[str]:
        """Paths that differ between two commits (both sides of renames), sorted."""


class GitMirrors(Protocol):
    async def sync(self, repository: str, url: str, *, want: str | None = None) -> GitReader:
        """Clone ``url`` as a bare mirror on first use, else fetch it incrementally.

        With ``want`` (a full commit sha) an existing mirror that already holds that commit is
        not fetched at all: a commit never changes, and CI jobs of one run all want the same one.

        Two callers (threads or processes) syncing one mirror never corrupt it: a file lock
        serialises them.
        """

    async def open(self, repository: str) -> GitReader:
        """A reader of the existing mirror; ``NotFoundError`` when it was never synced."""

    async def checkout(self, repository: str, commit: str, dest: Path) -> None:
        """Write the tree of ``commit`` into the new directory ``dest`` (no ``.git``, refs untouched).

        Executable bits and symbolic links are kept; submodules become empty directories.
        ``NotFoundError`` for an unknown commit or mirror, ``InvalidInputError`` for a tree
        entry that would escape ``dest``; ``dest`` must not exist yet.
        """

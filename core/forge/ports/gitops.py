"""GitOpsRepository: one branch of a GitOps remote, read and changed by whole commits (DESIGN §8).

The port knows files and commits, not pointers: ``forge.gitops`` decides what to write
(:class:`~forge.gitops.writer.GitOpsWriter`), the adapter decides how it reaches the remote.

``update(plan)`` is the only write. The adapter fetches the branch, calls ``plan`` with the tree
at its head, commits what the plan returns as **one** commit on that head and pushes it without
force. When the push is refused because the branch moved (another writer got there first), it
fetches again and calls ``plan`` again on the new head, so the change is re-applied, never
merged blindly; after ``attempts`` refused pushes it gives up with ``TransientError``. A plan
that returns ``None`` (nothing to do on this head) makes no commit. A remote that cannot be
reached raises ``ServiceUnavailableError``. The remote holds the whole commit or nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["GitOpsCommit", "GitOpsEdit", "GitOpsFiles", "GitOpsRepository", "GitOpsTree", "PathRevision"]


@dataclass(frozen=True, slots=True)
class GitOpsEdit:
    """One commit's worth of change: ``files`` maps a repo-relative path to its new bytes (``None`` deletes)."""

    files: Mapping[str, bytes | None]
    message: str


@dataclass(frozen=True, slots=True)
class GitOpsCommit:
    """The branch head after an update: ``changed`` is False when no commit was needed (``sha`` is the head
    the plan saw, ``None`` for a branch that does not exist yet); ``attempts`` counts the plans run."""

    sha: str | None
    changed: bool
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class GitOpsFiles:
    """Files read at one commit of the branch (``None``: absent there, or the branch does not exist)."""

    commit: str | None
    files: Mapping[str, bytes | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PathRevision:
    """A commit of the branch's first-parent history that changed one path, with that path's content then."""

    commit: str
    committed_at: datetime
    message: str
    content: bytes | None


class GitOpsTree(Protocol):
    """The tree at the head a plan works on; valid only during the plan call."""

    @property
    def commit(self) -> str | None:
        """The head commit, ``None`` when the branch does not exist yet."""

    def read(self, path: str) -> bytes | None:
        """The blob at ``path``, ``None`` when there is none (or it is a directory)."""


class GitOpsRepository(Protocol):
    @property
    def url(self) -> str:
        """The remote, as configured."""

    @property
    def branch(self) -> str: ...

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        """Commit ``plan``'s edit on the fetched head and push it; re-plan on a moved head (module docstring).

        ``plan`` runs in a worker thread, once per attempt; it must be pure (no side effects that
        matter when it runs again).
        """

    async def read(self, paths: Sequence[str]) -> GitOpsFiles:
        """Fetch the branch and read ``paths`` at its head."""

    async def history(self, path: str, *, limit: int = 50) -> list[PathRevision]:
        """Fetch the branch; the first-parent commits that changed ``path``, newest first, at most ``limit``."""

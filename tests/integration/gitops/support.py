"""Writers for the GitOps tests: each on its own work copy, as if on its own machine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.gitops import ApplicationDefaults, GitOpsWriter, PointerChange
from forge.ports.gitops import GitOpsCommit, GitOpsEdit, GitOpsFiles, GitOpsRepository, GitOpsTree, PathRevision

AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40
COMMIT_3 = "3" * 40
DIGEST_1 = "sha256:" + "a1" * 32
DIGEST_2 = "sha256:" + "b2" * 32
DIGEST_3 = "sha256:" + "c3" * 32


def change(**overrides: Any) -> PointerChange:
    fields: dict[str, Any] = {
        "environment": "dev",
        "repository": "acme/shop",
        "project": "api",
        "release_number": 1,
        "commit": COMMIT_1,
        "digest": DIGEST_1,
        "actor": "alice",
        "reason": "auto-deploy of release 1",
    }
    return PointerChange(**(fields | overrides))


def make_writer(url: str, work_dir: Path, *, attempts: int = 5) -> GitOpsWriter:
    """A writer on its own work copy (another machine, as far as the remote can tell)."""
    repository = Pygit2GitOps(url, work_dir, attempts=attempts, clock=lambda: AT)
    return GitOpsWriter(
        repository, ApplicationDefaults(repo_url="https://git.example.com/gitops.git"), clock=lambda: AT
    )


class RacingRepository:
    """The real adapter, with another writer's deploy landing on the remote right after our first fetch."""

    def __init__(self, inner: Pygit2GitOps, race: Callable[[], object]):
        self.inner = inner
        self.race = race
        self.plans = 0

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def branch(self) -> str:
        return self.inner.branch

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        def racing(tree: GitOpsTree) -> GitOpsEdit | None:
            self.plans += 1
            if self.plans == 1:
                self.race()  # runs in the adapter's worker thread, after the fetch, before the push
            return plan(tree)

        return await self.inner.update(racing)

    async def read(self, paths: Sequence[str]) -> GitOpsFiles:
        return await self.inner.read(paths)

    async def history(self, path: str, *, limit: int = 50) -> list[PathRevision]:
        return await self.inner.history(path, limit=limit)


def racing_writer(
    url: str, work_dir: Path, other: GitOpsWriter, other_change: PointerChange, attempts: int = 5
) -> tuple[GitOpsWriter, RacingRepository]:
    """A writer whose first push loses the race against ``other`` deploying ``other_change``."""
    inner = Pygit2GitOps(url, work_dir, attempts=attempts)
    racing = RacingRepository(inner, lambda: asyncio.run(other.deploy(other_change)))
    repository: GitOpsRepository = racing
    writer = GitOpsWriter(
        repository,
        ApplicationDefaults(repo_url="https://git.example.com/gitops.git"),
        clock=lambda: AT,
    )
    return writer, racing

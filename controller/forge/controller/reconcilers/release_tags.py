"""Release numbers in the registry: once a release is recorded (its number allocated), its Release OCI
artifact gets the ``<number>`` tag beside ``sha-<commit>`` (DESIGN §8), so ``oras pull
<registry>/<owner>/<repo>/<project>:<number>`` works.

The one writer of ``tagged_at``: every ``interval`` it tags what :meth:`ReleaseStore.releases_to_tag`
lists and marks each done. Tagging is idempotent, so a crash between the two steps only tags again;
a registry outage leaves the releases listed for the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from forge.errors import ForgeError, PermanentError
from forge.ports import ArtifactRegistry
from forge.ports.store import ReleaseStore
from forge.releases.naming import oci_repository

__all__ = ["ReleaseTagger"]

log = logging.getLogger("forge.controller.release_tags")


@dataclass
class ReleaseTagger:
    releases: ReleaseStore
    registry: ArtifactRegistry
    interval: float = 1.0
    batch: int = 50

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tag_pending()
            except ForgeError as exc:
                log.warning("release tags not pushed yet: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def tag_pending(self) -> int:
        """Tag every release waiting for its number tag; how many were tagged."""
        tagged = 0
        for release in await self.releases.releases_to_tag(limit=self.batch):
            repository = oci_repository(release.repository, release.project)
            try:
                await self.registry.tag(repository, release.oci_digest, str(release.number))
            except PermanentError as exc:  # e.g. the manifest is gone: say so, try again next pass
                log.error("cannot tag release %s/%s #%d: %s", release.repository, release.project, release.number, exc)
                continue
            await self.releases.mark_tagged(release.id)
            tagged += 1
        return tagged

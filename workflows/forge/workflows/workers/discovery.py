"""Discovery jobs: mirror the repository, discover at the commit, store the result (DESIGN §3)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from forge.discovery import ConfigCache, discover
from forge.domain.messages import DiscoveryPayload, Job
from forge.errors import InvalidInputError, LimitExceededError
from forge.ports import GitMirrors, ObjectStore

__all__ = ["MAX_DISCOVERY_BYTES", "DiscoveryHandler", "discovery_key"]

MAX_DISCOVERY_BYTES = 1024 * 1024


def discovery_key(run_id: object) -> str:
    return f"pipeline-runs/{run_id}/discovery.json"


@dataclass
class DiscoveryHandler:
    mirrors: GitMirrors
    objects: ObjectStore
    cache: ConfigCache = field(default_factory=ConfigCache)

    async def __call__(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        if not isinstance(payload, DiscoveryPayload):
            raise InvalidInputError(f"job {job.key} carries a {payload.type} payload, not discovery")
        reader = await self.mirrors.sync(job.repository, payload.clone_url)
        result = await asyncio.to_thread(
            discover,
            reader,
            job.commit_sha,
            payload.base_sha,
            branch=payload.branch,
            tag=payload.tag,
            requested_releases=payload.release_projects,
            cache=self.cache,
        )
        body = json.dumps(result.model_dump(mode="json"), separators=(",", ":")).encode()
        if len(body) > MAX_DISCOVERY_BYTES:
            raise LimitExceededError(
                f"discovery of {job.repository}@{job.commit_sha} is {len(body)} bytes; the limit is 1 MiB"
            )
        key = discovery_key(job.run_id)
        await self.objects.put(key, body, content_type="application/json")
        # The discovery itself lives in object storage (read once by the controller); the result
        # says where, and how much it found.
        return {"object_key": key, "projects": len(result.projects), "affected": len(result.affected)}

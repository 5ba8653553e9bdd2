"""The controller records the releases release steps pushed, and tags their numbers in the registry
(MemoryStore + MemoryBus + MemoryRegistry: the fakes pass the same compliance suites as the real ones)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from forge.controller.reconcilers.release_tags import ReleaseTagger
from forge.controller.step_events import new_release
from forge.domain.events import PublishedArtifact, PublishedRelease
from forge.ports.fakes import MemoryRegistry
from forge.ports.registry import Layer
from forge.ports.store import ReleaseFilter
from forge.releases.naming import oci_repository

from .support import ObservedStore
from .test_step_event_recorder import Setup, recorder_setup, recording

COMMIT = "c" * 40


def _drained(s: Setup) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await s.waiting() == 0

    return check


def _published(run_repository: str, digest: str, commit: str = COMMIT) -> PublishedRelease:
    return PublishedRelease(
        repository=run_repository,
        project="lib",
        commit_sha=commit,
        oci_ref=f"registry.invalid/{run_repository}/lib@{digest}",
        oci_digest=digest,
        trigger="push",
        branch="main",
        created_by="octocat",
        artifacts=[
            PublishedArtifact(
                name="image",
                type="container",
                tracking_ref=f"registry.invalid/{run_repository}/lib/image@sha256:{'1' * 64}",
                tracking_digest=f"sha256:{'1' * 64}",
                published=[{"publisher": "oci", "type": "oci", "location": "x"}],
            )
        ],
    )


async def test_a_release_steps_success_records_its_release_once() -> None:
    async with recorder_setup() as s:
        s.recorder.releases = s.store
        run = await s.store.get_run(s.run_id)
        release = _published(run.repository, f"sha256:{'a' * 64}")
        event = s.event("check/lib/lint", "success", release=release.model_dump())
        async with recording(s) as recorder:
            await s.publish(event)
            await recorder.until(_drained(s))
        page = await s.store.list_releases(ReleaseFilter(repository=run.repository), limit=10, offset=0)
        assert [(r.project, r.number, r.commit_sha, r.oci_digest, r.created_by, r.run_id) for r in page.items] == [
            ("lib", 1, COMMIT, release.oci_digest, "octocat", s.run_id)
        ]
        recorded = page.items[0]
        assert [a.alias for a in recorded.aliases] == ["1", "main-1"]
        assert [(a.name, a.tracking_digest) for a in recorded.artifacts] == [("image", f"sha256:{'1' * 64}")]
        assert (await s.statuses())["check/lib/lint"].value == "success"

        # applied again (a redelivered batch): nothing recorded twice
        await s.recorder._record_releases([event])
        assert (await s.store.list_releases(ReleaseFilter(), limit=10, offset=0)).total == 1


async def test_events_without_a_release_record_none() -> None:
    async with recorder_setup() as s:
        s.recorder.releases = s.store
        async with recording(s) as recorder:
            await s.publish(s.event("check/lib/lint", "success"))
            await recorder.until(_drained(s))
        assert (await s.store.list_releases(ReleaseFilter(), limit=10, offset=0)).total == 0


async def test_the_tagger_pushes_each_release_number_once() -> None:
    async with recorder_setup() as s:
        store: ObservedStore = s.store
        registry = MemoryRegistry()
        run = await store.get_run(s.run_id)
        repository = oci_repository(run.repository, "lib")
        digests = []
        for n in range(2):
            digests.append(
                await registry.push_artifact(
                    repository,
                    artifact_type="application/vnd.forge.release.v1",
                    layers=[Layer("application/vnd.forge.release.metadata.v1+json", b'{"n":%d}' % n)],
                    annotations={},
                )
            )
            await store.record_release(new_release(_published(run.repository, digests[-1], str(n) * 40), None))
        tagger = ReleaseTagger(store, registry)
        assert await tagger.tag_pending() == 2
        assert sorted(await registry.tags(repository)) == ["1", "2"]
        assert (await registry.manifest(repository, "2")).digest == digests[1]
        assert await store.releases_to_tag(limit=10) == []
        assert await tagger.tag_pending() == 0

"""ReleaseStore compliance: every test runs against the memory store and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest

from forge.domain.entities import ArtifactType, Release, Trigger
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import NewRelease, NewReleaseArtifact, NewRepository, NewRun, ReleaseFilter

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness

DIGEST = "sha256:" + "ab" * 32


def sha(n: int, prefix: str = "") -> str:
    return prefix + f"{n:0{40 - len(prefix)}x}"


def release(repo: str, n: int, project: str = "web", **changes: Any) -> NewRelease:
    new = NewRelease(
        repository=repo,
        project=project,
        commit_sha=sha(n),
        oci_ref=f"registry.test/{repo}/{project}:sha-{sha(n)}",
        oci_digest=DIGEST,
        trigger=Trigger.PUSH,
        created_by="controller",
    )
    return replace(new, **changes)


def aliases(r: Release) -> list[tuple[str, str]]:
    return [(a.alias, str(a.type)) for a in r.aliases]


async def test_numbers_count_from_one_per_project(store: Store, repo: str) -> None:
    await store.register_repository(NewRepository("acme/other", "https://git.example/acme/other.git"))
    web1, created = await store.record_release(release(repo, 1))
    web2, _ = await store.record_release(release(repo, 2))
    api1, _ = await store.record_release(release(repo, 3, project="api"))
    other1, _ = await store.record_release(release("acme/other", 1))
    assert created is True
    assert [web1.number, web2.number, api1.number, other1.number] == [1, 2, 1, 1]
    assert (web1.repository, web1.project, web1.commit_sha, web1.trigger) == (repo, "web", sha(1), Trigger.PUSH)
    assert (web1.oci_ref, web1.oci_digest, web1.created_by) == (release(repo, 1).oci_ref, DIGEST, "controller")
    assert web1.tagged_at is None
    assert web1.created_at < web2.created_at
    assert await store.get_release(repo, "web", "1") == web1


async def test_recording_a_commit_again_returns_the_release_unchanged(store: Store, repo: str) -> None:
    first, created = await store.record_release(release(repo, 1, branch="main"))
    again, created_again = await store.record_release(
        release(repo, 1, branch="other", oci_digest="sha256:" + "cd" * 32, trigger=Trigger.MANUAL)
    )
    assert (created, created_again) == (True, False)
    assert again == first
    second, _ = await store.record_release(release(repo, 2))
    assert second.number == 2  # a repeat takes no number


async def test_a_tag_on_a_released_commit_names_that_release(store: Store, repo: str) -> None:
    """The usual flow: main's release exists, then main is tagged; the tag run's release is the same one."""
    first, _ = await store.record_release(release(repo, 1, branch="main"))
    tagged, created = await store.record_release(
        release(repo, 1, tag="v1.0.0", oci_digest="sha256:" + "cd" * 32, trigger=Trigger.TAG)
    )
    assert created is False
    assert (tagged.id, tagged.number, tagged.oci_digest, tagged.trigger) == (first.id, 1, DIGEST, Trigger.PUSH)
    assert aliases(tagged) == [("1", "numeric"), ("v1.0.0", "tag"), ("main-1", "branch")]
    assert await store.get_release(repo, "web", "v1.0.0") == tagged
    again, _ = await store.record_release(release(repo, 1, tag="v1.0.0", trigger=Trigger.TAG))  # redelivered
    assert again == tagged
    await store.record_release(release(repo, 2))
    with pytest.raises(ConflictError, match=r"v1\.0\.0"):  # a tag names one release
        await store.record_release(release(repo, 2, tag="v1.0.0", trigger=Trigger.TAG))


async def test_aliases_are_the_number_the_tag_and_branch_number(store: Store, repo: str) -> None:
    plain, _ = await store.record_release(release(repo, 1))
    tagged, _ = await store.record_release(release(repo, 2, tag="v1.2.0", trigger=Trigger.TAG))
    branched, _ = await store.record_release(release(repo, 3, branch="main"))
    both, _ = await store.record_release(release(repo, 4, branch="feature/x", tag="v1.3.0+build.7"))
    assert aliases(plain) == [("1", "numeric")]
    assert aliases(tagged) == [("2", "numeric"), ("v1.2.0", "tag")]
    assert (tagged.tag, tagged.branch) == ("v1.2.0", None)
    assert aliases(branched) == [("3", "numeric"), ("main-3", "branch")]
    assert aliases(both) == [("4", "numeric"), ("v1.3.0+build.7", "tag"), ("feature/x-4", "branch")]
    assert (both.branch, both.tag) == ("feature/x", "v1.3.0+build.7")
    assert await store.get_release(repo, "web", "feature/x-4") == both
    same, _ = await store.record_release(release(repo, 5, branch="main", tag="main-5"))
    assert aliases(same) == [("5", "numeric"), ("main-5", "tag")]  # one alias: the tag


async def test_an_alias_held_by_another_release_is_a_conflict_and_writes_nothing(store: Store, repo: str) -> None:
    await store.record_release(release(repo, 1, tag="v1"))
    with pytest.raises(ConflictError, match=r"tag alias 'v1' already names release 1 of acme/app/web") as info:
        await store.record_release(release(repo, 2, tag="v1"))
    assert info.value.details == {"alias": "v1", "alias_type": "tag", "release": 1}
    await store.record_release(release(repo, 3, tag="main-3"))  # release 2, holding a future branch alias
    with pytest.raises(ConflictError, match="branch alias 'main-3' already names release 2"):
        await store.record_release(release(repo, 4, branch="main"))
    third, created = await store.record_release(release(repo, 2, tag="v2"))
    assert (third.number, created) == (3, True)  # gap-free: the refused ones took no number
    with pytest.raises(NotFoundError):
        await store.get_release(repo, "web", sha(4))
    other, _ = await store.record_release(release(repo, 9, project="api", tag="v1"))  # per project
    assert aliases(other) == [("1", "numeric"), ("v1", "tag")]


async def test_artifacts_are_stored_with_the_release(store: Store, repo: str) -> None:
    image = NewReleaseArtifact(
        name="image",
        type=ArtifactType.CONTAINER,
        tracking_ref=f"registry.test/{repo}/web/image:sha-{sha(1)}",
        tracking_digest="sha256:" + "11" * 32,
        published=({"publisher": "oci", "ref": "registry.test/acme/app/web/image@sha256:22", "digest": "sha256:22"},),
    )
    cli = NewReleaseArtifact("cli", ArtifactType.BINARY, "registry.test/cli:sha", "sha256:" + "33" * 32)
    made, _ = await store.record_release(release(repo, 1, artifacts=(image, cli)))
    assert [a.name for a in made.artifacts] == ["cli", "image"]
    got = (await store.get_release(repo, "web", "1")).artifacts
    assert got == made.artifacts
    assert all(a.release_id == made.id for a in got)
    assert (got[1].type, got[1].tracking_ref, got[1].tracking_digest) == (
        ArtifactType.CONTAINER,
        image.tracking_ref,
        image.tracking_digest,
    )
    assert got[1].published == (dict(image.published[0]),)
    assert (got[0].type, got[0].published) == (ArtifactType.BINARY, ())


async def test_unknown_repository_or_run(store: Store, repo: str) -> None:
    with pytest.raises(NotFoundError, match="acme/ghost") as info:
        await store.record_release(release("acme/ghost", 1))
    assert info.value.details == {"repository": "acme/ghost"}
    with pytest.raises(NotFoundError, match="run_id"):
        await store.record_release(release(repo, 1, run_id=uuid4()))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"project": "Web"}, "project"),
        ({"commit_sha": "HEAD"}, "commit_sha"),
        ({"oci_digest": "latest"}, "oci_digest"),
        ({"oci_ref": ""}, "oci_ref"),
        ({"tag": "v 1"}, "tag"),
        ({"tag": "v1..2"}, "tag"),
        ({"tag": "42"}, "tag"),
        ({"tag": "v" * 256}, "tag"),
        ({"branch": "-x"}, "branch"),
        ({"branch": "b" * 250}, "branch"),
        (
            {"artifacts": (NewReleaseArtifact("a", ArtifactType.BINARY, "r", "d"),) * 2},
            "artifacts",
        ),
    ],
)
async def test_invalid_releases_are_refused_naming_the_field(
    store: Store, repo: str, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=rf"recording the release of acme/app/.*: {field} ") as info:
        await store.record_release(release(repo, 1, **changes))
    assert info.value.details == {"field": field}
    assert (await store.list_releases(ReleaseFilter(), limit=10, offset=0)).total == 0


async def test_every_ref_form(store: Store, repo: str) -> None:
    one, _ = await store.record_release(release(repo, 1, tag="v1.0.0", branch="main"))
    two, _ = await store.record_release(release(repo, 2, tag="deadbeef"))
    three, _ = await store.record_release(replace(release(repo, 3), commit_sha=sha(3, "deadbeef")))
    assert await store.get_release(repo, "web", "1") == one
    assert await store.get_release(repo, "web", "v1.0.0") == one
    assert await store.get_release(repo, "web", "main-1") == one
    assert await store.get_release(repo, "web", sha(1)) == one
    assert await store.get_release(repo, "web", sha(3, "deadbeef")[:12]) == three
    assert await store.get_release(repo, "web", sha(3, "deadbeef")[:12].upper()) == three
    assert await store.get_release(repo, "web", "deadbeef") == two  # an alias before a commit prefix
    assert await store.get_release(repo, "web", "3") == three


async def test_an_ambiguous_commit_prefix_names_the_candidates(store: Store, repo: str) -> None:
    for n in (1, 2, 3):
        await store.record_release(replace(release(repo, n), commit_sha=sha(n, "abcdef12")))
    with pytest.raises(ConflictError, match=r"'abcdef1' .* ambiguous .* releases 1, 2, 3") as info:
        await store.get_release(repo, "web", "abcdef1")
    assert info.value.details == {"ref": "abcdef1", "releases": [1, 2, 3]}


@pytest.mark.parametrize("ref", ["2", "abcdef", "v9", "0000000000001", "main-1"])
async def test_unknown_refs_are_not_found(store: Store, repo: str, ref: str) -> None:
    await store.record_release(release(repo, 1, branch="trunk"))
    with pytest.raises(NotFoundError, match=f"acme/app/web has no release '{ref}'"):
        await store.get_release(repo, "web", ref)


async def test_refs_of_other_projects_and_repositories_are_not_found(store: Store, repo: str) -> None:
    await store.record_release(release(repo, 1))
    for repository, project in ((repo, "api"), ("acme/ghost", "web")):
        with pytest.raises(NotFoundError):
            await store.get_release(repository, project, "1")
        with pytest.raises(NotFoundError):
            await store.get_release(repository, project, sha(1)[:10])


@pytest.mark.parametrize("ref", ["", "v 1", "a..b", "x" * 256, "-1", "/etc", "v1;drop", "ü"])
async def test_refs_that_cannot_be_one_are_invalid(store: Store, repo: str, ref: str) -> None:
    with pytest.raises(InvalidInputError, match="is neither a release number, alias nor commit prefix") as info:
        await store.get_release(repo, "web", ref)
    assert info.value.details == {"field": "ref"}


async def test_list_filters_paging_and_total(store: Store, repo: str) -> None:
    await store.register_repository(NewRepository("acme/other", "https://git.example/acme/other.git"))
    run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))
    made = []
    for n in range(1, 6):
        project = "web" if n % 2 else "api"
        trigger = Trigger.TAG if n == 5 else Trigger.PUSH
        r, _ = await store.record_release(
            release(repo, n, project=project, trigger=trigger, run_id=run.id if n <= 2 else None)
        )
        made.append(r)
    other, _ = await store.record_release(release("acme/other", 6))

    everything = await store.list_releases(ReleaseFilter(), limit=100, offset=0)
    assert [r.id for r in everything.items] == [other.id, *(r.id for r in reversed(made))]  # newest first
    assert (everything.total, everything.limit, everything.offset) == (6, 100, 0)

    web = await store.list_releases(ReleaseFilter(repository=repo, project="web"), limit=2, offset=0)
    assert ([r.number for r in web.items], web.total) == ([3, 2], 3)
    rest = await store.list_releases(ReleaseFilter(repository=repo, project="web"), limit=2, offset=2)
    assert ([r.number for r in rest.items], rest.total) == ([1], 3)
    beyond = await store.list_releases(ReleaseFilter(repository=repo, project="web"), limit=2, offset=10)
    assert (beyond.items, beyond.total) == ([], 3)

    by_run = await store.list_releases(ReleaseFilter(run_id=run.id), limit=10, offset=0)
    assert [r.commit_sha for r in by_run.items] == [sha(2), sha(1)]
    by_sha = await store.list_releases(ReleaseFilter(commit_sha=sha(6)), limit=10, offset=0)
    assert [r.id for r in by_sha.items] == [other.id]
    by_trigger = await store.list_releases(ReleaseFilter(repository=repo, trigger=Trigger.TAG), limit=10, offset=0)
    assert [r.commit_sha for r in by_trigger.items] == [sha(5)]
    assert by_trigger.items[0].aliases  # list items carry their aliases
    none = await store.list_releases(ReleaseFilter(repository="acme/ghost"), limit=10, offset=0)
    assert (none.items, none.total) == ([], 0)


@pytest.mark.parametrize(("limit", "offset", "name"), [(0, 0, "limit"), (1001, 0, "limit"), (10, -1, "offset")])
async def test_list_page_bounds(store: Store, limit: int, offset: int, name: str) -> None:
    with pytest.raises(InvalidInputError, match=name) as info:
        await store.list_releases(ReleaseFilter(), limit=limit, offset=offset)
    assert name in info.value.details


async def test_releases_to_tag_until_marked(store: Store, repo: str) -> None:
    made = [(await store.record_release(release(repo, n)))[0] for n in range(1, 4)]
    assert [r.id for r in await store.releases_to_tag(limit=10)] == [r.id for r in made]  # oldest first
    assert [r.id for r in await store.releases_to_tag(limit=2)] == [made[0].id, made[1].id]

    await store.mark_tagged(made[0].id)
    assert [r.id for r in await store.releases_to_tag(limit=10)] == [made[1].id, made[2].id]
    tagged = await store.get_release(repo, "web", "1")
    assert tagged.tagged_at is not None
    assert tagged.tagged_at >= made[0].created_at
    await store.mark_tagged(made[0].id)  # a repeat keeps the first time
    assert (await store.get_release(repo, "web", "1")).tagged_at == tagged.tagged_at
    again, created = await store.record_release(release(repo, 1))
    assert (again.tagged_at, created) == (tagged.tagged_at, False)

    missing = uuid4()
    with pytest.raises(NotFoundError, match=str(missing)):
        await store.mark_tagged(missing)
    with pytest.raises(InvalidInputError, match="limit"):
        await store.releases_to_tag(limit=0)


async def test_twenty_concurrent_recordings_number_one_to_twenty(harness: StoreHarness, repo: str) -> None:
    """Four connections record 20 commits of one project at once, each commit twice: exactly 1..20."""
    stores = [await harness.open() for _ in range(4)]
    try:
        calls = [stores[i % 4].record_release(release(repo, i % 20, branch="main")) for i in range(40)]
        results = await asyncio.gather(*calls)
        first = {r.commit_sha: r for r, created in results if created}
        assert len(first) == 20
        assert sorted(r.number for r in first.values()) == list(range(1, 21))
        page = await stores[0].list_releases(ReleaseFilter(repository=repo, project="web"), limit=100, offset=0)
        assert page.total == 20
        assert [r.number for r in page.items] == list(range(20, 0, -1))  # newest first is number order
        for r in page.items:
            assert aliases(r) == [(str(r.number), "numeric"), (f"main-{r.number}", "branch")]
    finally:
        for st in stores:
            await st.close()

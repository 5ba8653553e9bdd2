from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

from forge.domain.entities import Trigger
from forge.domain.status import Status
from forge.errors import ConflictError, InvalidInputError, NotFoundError
from forge.ports.store import NewRepository, NewRun, RunFilter

if TYPE_CHECKING:
    from tests.integration.store.conftest import Store, StoreHarness


def sha(n: int) -> str:
    return f"{n:040x}"


async def test_create_run_is_idempotent(store: Store, repo: str) -> None:
    new = NewRun(
        repository=repo,
        commit_sha=sha(1),
        branch="main",
        base_sha=sha(0),
        trigger=Trigger.PUSH,
        triggered_by="octocat",
        github_context={"pr_number": None, "context": "ci/catalyst-forge"},
    )
    run, created = await store.create_run(new)
    assert created is True
    assert (run.repository, run.commit_sha, run.branch, run.base_sha) == (repo, sha(1), "main", sha(0))
    assert run.trigger is Trigger.PUSH
    assert run.status is Status.PENDING
    assert run.discovery_status is Status.PENDING
    assert run.github_context == {"pr_number": None, "context": "ci/catalyst-forge"}
    assert run.started_at is None

    again, created_again = await store.create_run(NewRun(repository=repo, commit_sha=sha(1), branch="main"))
    assert created_again is False
    assert again == run
    assert await store.get_run(run.id) == run


async def test_runs_are_keyed_by_commit_and_ref(store: Store, repo: str) -> None:
    """A tag pushed on a commit that already ran for its branch is a run of its own (its releases need
    one), as is a manual release request; a repeat of any of them is not."""
    branch, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(1), branch="main"))
    tag, created = await store.create_run(
        NewRun(repository=repo, commit_sha=sha(1), tag="api/v1.2.0", trigger=Trigger.TAG)
    )
    assert created is True
    assert tag.id != branch.id
    assert (tag.tag, tag.branch, tag.release_projects) == ("api/v1.2.0", None, ())
    release, created = await store.create_run(
        NewRun(repository=repo, commit_sha=sha(1), branch="main", release_projects=("web", "api", "api"))
    )
    assert created is True
    assert release.release_projects == ("web", "api", "api")
    assert len({branch.id, tag.id, release.id}) == 3
    for repeat in (
        NewRun(repository=repo, commit_sha=sha(1), tag="api/v1.2.0", trigger=Trigger.TAG),
        NewRun(repository=repo, commit_sha=sha(1), branch="main", release_projects=("api", "web")),
    ):
        again, created = await store.create_run(repeat)
        assert created is False
        assert again.id in {tag.id, release.id}
    other, created = await store.create_run(NewRun(repository=repo, commit_sha=sha(1), branch="feature"))
    assert created is True
    assert other.id != branch.id
    assert (await store.get_run(tag.id)) == tag


async def test_a_run_has_a_branch_or_a_tag(store: Store, repo: str) -> None:
    with pytest.raises(InvalidInputError, match="branch or a tag, not both"):
        await store.create_run(NewRun(repository=repo, commit_sha=sha(1), branch="main", tag="v1.0.0"))


async def test_concurrent_create_run_creates_exactly_once(store: Store, repo: str) -> None:
    results = await asyncio.gather(*(store.create_run(NewRun(repository=repo, commit_sha=sha(7))) for _ in range(10)))
    assert sorted(created for _, created in results) == [False] * 9 + [True]
    assert len({run.id for run, _ in results}) == 1


async def test_create_run_unknown_repository(store: Store) -> None:
    with pytest.raises(NotFoundError, match="acme/ghost") as info:
        await store.create_run(NewRun(repository="acme/ghost", commit_sha=sha(1)))
    assert info.value.details == {"repository": "acme/ghost"}


async def test_create_run_disabled_repository(harness: StoreHarness, store: Store, repo: str) -> None:
    await harness.disable_repository(repo)
    with pytest.raises(ConflictError, match="disabled"):
        await store.create_run(NewRun(repository=repo, commit_sha=sha(1)))


async def test_create_run_rejects_bad_sha(store: Store, repo: str) -> None:
    with pytest.raises(InvalidInputError, match="pipeline_runs_commit_sha_format"):
        await store.create_run(NewRun(repository=repo, commit_sha="HEAD"))


async def test_get_run_unknown(store: Store) -> None:
    run_id = uuid4()
    with pytest.raises(NotFoundError, match=str(run_id)):
        await store.get_run(run_id)


async def test_list_runs_filters_pagination_and_total(harness: StoreHarness, store: Store, repo: str) -> None:
    await store.register_repository(NewRepository("acme/other", "https://x.example/other.git"))
    made = []
    for n in range(7):
        branch = "main" if n % 2 == 0 else "feature"
        run, _ = await store.create_run(NewRun(repository=repo, commit_sha=sha(n), branch=branch))
        made.append(run)
    other, _ = await store.create_run(NewRun(repository="acme/other", commit_sha=sha(100), branch="main"))

    everything = await store.list_runs(RunFilter(), limit=100, offset=0)
    assert everything.total == 8
    assert [r.id for r in everything.items] == [other.id, *(r.id for r in reversed(made))]  # newest first

    mine = await store.list_runs(RunFilter(repository=repo), limit=3, offset=0)
    assert mine.total == 7
    assert [r.commit_sha for r in mine.items] == [sha(6), sha(5), sha(4)]
    page3 = await store.list_runs(RunFilter(repository=repo), limit=3, offset=6)
    assert [r.commit_sha for r in page3.items] == [sha(0)]
    assert page3.total == 7
    beyond = await store.list_runs(RunFilter(repository=repo), limit=3, offset=30)
    assert (beyond.items, beyond.total) == ([], 7)

    main = await store.list_runs(RunFilter(repository=repo, branch="main"), limit=100, offset=0)
    assert {r.commit_sha for r in main.items} == {sha(0), sha(2), sha(4), sha(6)}
    assert main.total == 4

    by_sha = await store.list_runs(RunFilter(commit_sha=sha(100)), limit=10, offset=0)
    assert [r.id for r in by_sha.items] == [other.id]

    await harness.set_run_status(made[3].id, Status.SUCCESS)
    done = await store.list_runs(RunFilter(status=Status.SUCCESS), limit=10, offset=0)
    assert [r.id for r in done.items] == [made[3].id]
    assert done.items[0].status is Status.SUCCESS
    pending = await store.list_runs(RunFilter(repository=repo, status=Status.PENDING), limit=10, offset=0)
    assert pending.total == 6

    by_trigger = await store.list_runs(RunFilter(extra={"trigger": "manual"}), limit=10, offset=0)
    assert by_trigger.total == 8


async def test_list_runs_unknown_filter(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="colour"):
        await store.list_runs(RunFilter(extra={"colour": "red"}), limit=10, offset=0)

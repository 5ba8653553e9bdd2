"""GithubStatuses against a local HTTP server answering like GitHub's commit status API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from forge.adapters.github_statuses import GithubStatuses
from forge.embedded.process import free_port
from forge.errors import InvalidInputError, NotFoundError, PermanentError, ServiceUnavailableError, TransientError
from forge.testing.github import FakeGithub

SHA = "ab" * 20


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub()
    yield fake
    fake.close()


@pytest.fixture
async def statuses(github: FakeGithub) -> AsyncIterator[GithubStatuses]:
    async with GithubStatuses.from_token(github.url, github.token) as client:
        client._retry_delay = 0.01
        yield client


async def test_posts_a_commit_status_like_github_expects(github: FakeGithub, statuses: GithubStatuses) -> None:
    await statuses.set_commit_status(
        "acme/mono",
        SHA,
        state="pending",
        context="ci/catalyst-forge",
        description="x" * 200,
        target_url="http://forge/v1/runs/1",
    )
    [request] = github.requests
    assert request.path == f"/repos/acme/mono/statuses/{SHA}"
    assert request.headers["Authorization"] == f"Bearer {github.token}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.body == {
        "state": "pending",
        "context": "ci/catalyst-forge",
        "description": "x" * 140,
        "target_url": "http://forge/v1/runs/1",
    }


async def test_transient_failures_are_retried_once(github: FakeGithub, statuses: GithubStatuses) -> None:
    github.fail_next = [502]
    await statuses.set_commit_status("acme/mono", SHA, state="success", context="c", description="d", target_url=None)
    assert github.statuses() == [(SHA, "success", "d")]
    github.fail_next = [500, 503]
    with pytest.raises(TransientError, match="503"):
        await statuses.set_commit_status(
            "acme/mono", SHA, state="success", context="c", description="d", target_url=None
        )


async def test_errors_name_their_cause(github: FakeGithub) -> None:
    async with GithubStatuses.from_token(github.url, "wrong") as bad_token:
        with pytest.raises(PermanentError, match="Bad credentials"):
            await bad_token.set_commit_status(
                "acme/mono", SHA, state="success", context="c", description="d", target_url=None
            )
    async with GithubStatuses.from_token(github.url, github.token) as client:
        with pytest.raises(NotFoundError, match="unknown repository or commit"):
            await client.set_commit_status(
                "acme/mono", "nope", state="success", context="c", description="d", target_url=None
            )
        with pytest.raises(InvalidInputError, match="not one of"):
            await client.set_commit_status(
                "acme/mono", SHA, state="done", context="c", description="d", target_url=None
            )
    assert len(github.requests) == 2  # the invalid state never left the process
    async with GithubStatuses.from_token(f"http://127.0.0.1:{free_port()}", "t") as unreachable:
        with pytest.raises(ServiceUnavailableError, match="did not answer"):
            await unreachable.set_commit_status(
                "acme/mono", SHA, state="success", context="c", description="d", target_url=None
            )

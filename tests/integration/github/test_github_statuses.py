"""GithubStatuses against a local HTTP server answering like GitHub's commit status API.

stamina runs in test mode here: the adapter's attempts are kept, its waits are zero.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stamina

from forge.adapters.github_statuses import GithubStatuses
from forge.embedded.process import free_port
from forge.errors import InvalidInputError, NotFoundError, PermanentError, ServiceUnavailableError
from forge.testing.github import FakeGithub

SHA = "ab" * 20


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
async def statuses(github: FakeGithub) -> AsyncIterator[GithubStatuses]:
    async with GithubStatuses.from_token(github.url, github.token) as client:
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
    with pytest.raises(ServiceUnavailableError, match="503 Server Error") as info:
        await statuses.set_commit_status(
            "acme/mono", SHA, state="success", context="c", description="d", target_url=None
        )
    assert info.value.details["status"] == 503
    assert [r.answered for r in github.requests] == [502, 201, 500, 503]
    github.fail_next = [422]
    with pytest.raises(InvalidInputError, match="Failure"):  # permanent: not retried
        await statuses.set_commit_status(
            "acme/mono", SHA, state="success", context="c", description="d", target_url=None
        )
    assert len(github.requests) == 5


async def test_errors_name_their_cause(github: FakeGithub) -> None:
    async with GithubStatuses.from_token(github.url, "wrong") as bad_token:
        with pytest.raises(PermanentError, match=r"refused the request \(401\): Bad credentials") as denied:
            await bad_token.set_commit_status(
                "acme/mono", SHA, state="success", context="c", description="d", target_url=None
            )
    assert denied.value.code == "unauthorized"
    async with GithubStatuses.from_token(github.url, github.token) as client:
        with pytest.raises(NotFoundError, match="unknown repository or commit"):
            await client.set_commit_status(
                "acme/mono", "nope", state="success", context="c", description="d", target_url=None
            )
        with pytest.raises(InvalidInputError, match="not one of"):
            await client.set_commit_status(
                "acme/mono", SHA, state="done", context="c", description="d", target_url=None
            )
    assert len(github.requests) == 2  # the invalid state never left the process; 401 and 404 are not retried
    async with GithubStatuses.from_token(f"http://127.0.0.1:{free_port()}", "t") as unreachable:
        with pytest.raises(ServiceUnavailableError, match=r"GitHub at http://127\.0\.0\.1:[0-9]+ is unreachable"):
            await unreachable.set_commit_status(
                "acme/mono", SHA, state="success", context="c", description="d", target_url=None
            )

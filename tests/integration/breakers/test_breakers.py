"""Circuit breakers on the real adapters, against real servers that fail for real.

GitHub and the Argo Server are local HTTP servers with their APIs' shapes answering 503; the
registry is a ``docker-registry`` that is stopped and started again on the same port; the GitOps
remote is a bare repository that is deleted and created again. Each test: N failures open the
breaker, the next call fails fast (the server sees no request), and once the injected clock has
moved past ``reset_after`` one probe closes it (success) or opens it again (failure).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pygit2
import pytest
import stamina
from tests.integration.controller.support import FakeArgo

from forge.adapters._breakers import CircuitBreaker
from forge.adapters._http import RetryPolicy
from forge.adapters.argo_workflows import ArgoWorkflowEngine
from forge.adapters.github_statuses import GithubStatuses
from forge.adapters.oras_registry import OrasRegistry
from forge.adapters.pygit2_gitops import Pygit2GitOps
from forge.embedded.process import ServiceProcess
from forge.embedded.registry import registry_binary, start_registry
from forge.errors import NotFoundError, ServiceUnavailableError, TransientError
from forge.testing.github import FakeGithub

SHA = "ab" * 20
RESET = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _state(breaker: CircuitBreaker) -> str:
    return breaker.state  # read afresh (mypy keeps a narrowed attribute across awaits)


def _fast_fail(error: pytest.ExceptionInfo[ServiceUnavailableError], name: str) -> None:
    assert error.value.code == "circuit_open"
    assert error.value.details["breaker"] == name
    assert isinstance(error.value, TransientError)


# -- GitHub ----------------------------------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub()
    yield fake
    fake.close()


@pytest.fixture
async def statuses(github: FakeGithub, clock: Clock) -> AsyncIterator[GithubStatuses]:
    breaker = CircuitBreaker("github", threshold=3, reset_after=RESET, clock=clock)
    with stamina.set_testing(True, attempts=1):  # one request per call: the breaker's count is the calls'
        async with GithubStatuses.from_token(github.url, github.token, breaker=breaker) as client:
            yield client


async def _post(statuses: GithubStatuses) -> None:
    await statuses.set_commit_status(
        "acme/mono", SHA, state="pending", context="ci/catalyst-forge", description="running", target_url=None
    )


async def test_github_breaker_opens_fails_fast_and_a_probe_closes_it(
    github: FakeGithub, statuses: GithubStatuses, clock: Clock
) -> None:
    github.fail_next = [503] * 3
    for _ in range(3):
        with pytest.raises(ServiceUnavailableError, match="503"):
            await _post(statuses)
    with pytest.raises(ServiceUnavailableError, match="circuit breaker github is open") as refused:
        await _post(statuses)
    _fast_fail(refused, "github")
    assert refused.value.retry_after == RESET
    assert len(github.requests) == 3  # the fast failure never reached GitHub

    clock.now += RESET
    await _post(statuses)  # the probe: GitHub is back
    assert github.statuses() == [(SHA, "pending", "running")]
    await _post(statuses)
    assert len(github.requests) == 5


async def test_github_breaker_probe_failure_reopens(github: FakeGithub, statuses: GithubStatuses, clock: Clock) -> None:
    github.fail_next = [503] * 4
    for _ in range(3):
        with pytest.raises(ServiceUnavailableError):
            await _post(statuses)
    clock.now += RESET
    with pytest.raises(ServiceUnavailableError, match="503"):
        await _post(statuses)  # the probe reaches GitHub, which still fails
    with pytest.raises(ServiceUnavailableError, match=r"is open; next probe in 30\.0 s") as refused:
        await _post(statuses)
    _fast_fail(refused, "github")
    assert len(github.requests) == 4


# -- Argo Server -----------------------------------------------------------------------------------


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    fake = FakeArgo(namespace="forge")
    fake.start()
    yield fake
    fake.close()


def _engine(argo: FakeArgo, clock: Clock, attempts: int) -> ArgoWorkflowEngine:
    breaker = CircuitBreaker("argo", threshold=3, reset_after=RESET, clock=clock)
    policy = RetryPolicy(attempts=attempts, timeout=None, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0)
    return ArgoWorkflowEngine(argo.url, namespace="forge", retry=policy, breaker=breaker)


async def test_argo_breaker_opens_on_503s_and_a_probe_closes_it(argo: FakeArgo, clock: Clock) -> None:
    async with _engine(argo, clock, attempts=1) as engine:
        with pytest.raises(NotFoundError):
            await engine.status("forge-run-missing")  # Argo answers: a 404 is not an outage
        argo.outage.fail_next(3, retry_after=None)
        for _ in range(3):
            with pytest.raises(ServiceUnavailableError, match="503"):
                await engine.status("forge-run-missing")
        seen = len(argo.requests)
        with pytest.raises(ServiceUnavailableError, match="circuit breaker argo is open") as refused:
            await engine.stop("forge-run-missing", message="cancelled")
        _fast_fail(refused, "argo")
        assert len(argo.requests) == seen

        clock.now += RESET - 1
        with pytest.raises(ServiceUnavailableError, match=r"next probe in 1\.0 s"):
            await engine.status("forge-run-missing")
        clock.now += 1
        with pytest.raises(NotFoundError):
            await engine.status("forge-run-missing")  # the probe: Argo answers again
        argo.outage.fail_next(1, retry_after=None)
        with pytest.raises(ServiceUnavailableError, match="503"):
            await engine.status("forge-run-missing")  # closed again: one failure does not open it


async def test_argo_retry_gives_up_at_once_when_the_breaker_opens_mid_call(argo: FakeArgo, clock: Clock) -> None:
    """Five attempts per call, threshold 3: the fourth attempt meets the open breaker, whose
    retry_after (30 s) is longer than the adapter waits (10 s), so the call ends there."""
    async with _engine(argo, clock, attempts=5) as engine:
        argo.outage.fail_next(10, retry_after=None)
        with pytest.raises(ServiceUnavailableError, match="circuit breaker argo is open"):
            await engine.status("forge-run-missing")
        assert argo.outage.failed == 3


# -- OCI registry ----------------------------------------------------------------------------------


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A registry of this test's own: the test stops and restarts it."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (scripts/setup installs it as root)")
    proc = start_registry(tmp_path / "registry")
    yield proc
    proc.stop()


async def test_registry_breaker_opens_while_the_registry_is_stopped(
    registry_server: ServiceProcess, tmp_path: Path, clock: Clock
) -> None:
    breaker = CircuitBreaker("registry", threshold=2, reset_after=RESET, clock=clock)
    registry = OrasRegistry(registry_server.url, breaker=breaker)
    with pytest.raises(NotFoundError):
        await registry.tags("acme/mono/app")  # up: an unknown repository is an answer
    port = int(registry_server.url.rsplit(":", 1)[1])
    registry_server.stop()
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError, match=r"127\.0\.0\.1"):
            await registry.tags("acme/mono/app")
    with pytest.raises(ServiceUnavailableError, match="circuit breaker registry is open") as refused:
        await registry.tags("acme/mono/app")
    _fast_fail(refused, "registry")

    clock.now += RESET
    with pytest.raises(ServiceUnavailableError, match=r"127\.0\.0\.1"):
        await registry.tags("acme/mono/app")  # the probe: still down
    assert _state(breaker) == "open"

    restarted = start_registry(tmp_path / "registry", port)
    try:
        clock.now += RESET
        with pytest.raises(NotFoundError):
            await registry.tags("acme/mono/app")  # the probe: back
        assert _state(breaker) == "closed"
    finally:
        restarted.stop()


# -- GitOps remote ---------------------------------------------------------------------------------


async def test_gitops_breaker_opens_while_the_remote_is_gone(tmp_path: Path, clock: Clock) -> None:
    remote = tmp_path / "gitops.git"
    pygit2.init_repository(str(remote), bare=True, initial_head="main")
    breaker = CircuitBreaker("gitops", threshold=2, reset_after=RESET, clock=clock, counts=(ServiceUnavailableError,))
    gitops = Pygit2GitOps(str(remote), tmp_path / "work", breaker=breaker)
    assert (await gitops.read(["dev/env.yaml"])).commit is None  # an empty remote answers

    shutil.rmtree(remote)
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError, match="cannot fetch"):
            await gitops.read(["dev/env.yaml"])
    with pytest.raises(ServiceUnavailableError, match="circuit breaker gitops is open") as refused:
        await gitops.read(["dev/env.yaml"])
    _fast_fail(refused, "gitops")
    assert "last: gitops: cannot fetch" in refused.value.message

    pygit2.init_repository(str(remote), bare=True, initial_head="main")
    clock.now += RESET
    assert (await gitops.read(["dev/env.yaml"])).files == {"dev/env.yaml": None}  # the probe closes it
    assert _state(breaker) == "closed"

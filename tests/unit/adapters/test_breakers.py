"""forge.adapters._breakers: open after N consecutive transient failures, fail fast, one half-open probe.

Time is a list the tests move (the breaker's injected clock); nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from forge.adapters._breakers import CircuitBreaker, breaker_states, on_state_change
from forge.errors import NotFoundError, ServiceUnavailableError, TransientError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    unsubscribe = on_state_change(lambda name, state: seen.append((name, state)))
    yield seen
    unsubscribe()


def _state(breaker: CircuitBreaker) -> str:
    """The state, read afresh (mypy would keep a narrowed ``breaker.state`` across the awaits)."""
    return breaker.state


async def _fail(breaker: CircuitBreaker, error: BaseException | None = None) -> None:
    with pytest.raises(type(error) if error else TransientError):
        async with breaker:
            raise error or TransientError("registry at 127.0.0.1:1 is unreachable")


async def _succeed(breaker: CircuitBreaker) -> str:
    async with breaker:
        return "ok"


async def test_opens_after_threshold_consecutive_failures_and_fails_fast(
    clock: Clock, changes: list[tuple[str, str]]
) -> None:
    breaker = CircuitBreaker("registry", threshold=3, reset_after=30, clock=clock)
    await _fail(breaker)
    await _fail(breaker)
    await _succeed(breaker)  # a success in between: the count starts over
    for _ in range(3):
        assert _state(breaker) == "closed"
        await _fail(breaker)
    assert _state(breaker) == "open"
    assert changes == [("registry", "open")]

    calls = 0
    clock.now += 10
    with pytest.raises(ServiceUnavailableError) as refused:
        async with breaker:
            calls += 1
    assert calls == 0  # failed fast: the call never ran
    error = refused.value
    assert isinstance(error, TransientError)
    assert error.code == "circuit_open"
    assert error.details == {"breaker": "registry", "state": "open"}
    assert error.retry_after == pytest.approx(20)
    assert "circuit breaker registry is open; next probe in 20.0 s" in error.message
    assert "last: registry at 127.0.0.1:1 is unreachable" in error.message


async def test_half_open_probe_success_closes(clock: Clock, changes: list[tuple[str, str]]) -> None:
    breaker = CircuitBreaker("github", threshold=1, reset_after=30, clock=clock)
    await _fail(breaker)
    clock.now += 30
    assert await _succeed(breaker) == "ok"
    assert _state(breaker) == "closed"
    assert changes == [("github", "open"), ("github", "half-open"), ("github", "closed")]
    await _fail(breaker)  # threshold 1 again: the count was reset
    assert _state(breaker) == "open"


async def test_half_open_probe_failure_reopens_for_a_full_period(clock: Clock, changes: list[tuple[str, str]]) -> None:
    breaker = CircuitBreaker("argo", threshold=2, reset_after=30, clock=clock)
    await _fail(breaker)
    await _fail(breaker)
    clock.now += 31
    await _fail(breaker)  # the probe
    assert _state(breaker) == "open"
    assert changes == [("argo", "open"), ("argo", "half-open"), ("argo", "open")]
    clock.now += 29
    with pytest.raises(ServiceUnavailableError, match=r"next probe in 1\.0 s"):
        await _succeed(breaker)
    clock.now += 1
    assert await _succeed(breaker) == "ok"
    assert _state(breaker) == "closed"


async def test_half_open_lets_one_probe_through(clock: Clock) -> None:
    breaker = CircuitBreaker("gitops", threshold=1, reset_after=5, clock=clock)
    await _fail(breaker)
    clock.now += 5
    probing, release = asyncio.Event(), asyncio.Event()

    async def probe() -> None:
        async with breaker:
            probing.set()
            await release.wait()

    task = asyncio.create_task(probe())
    await probing.wait()
    with pytest.raises(ServiceUnavailableError, match="half-open; a probe call is in flight") as refused:
        await _succeed(breaker)
    assert refused.value.retry_after == 1.0
    release.set()
    await task
    assert _state(breaker) == "closed"
    assert await _succeed(breaker) == "ok"


async def test_answers_that_are_not_outages_count_as_successes(clock: Clock) -> None:
    breaker = CircuitBreaker("registry", threshold=2, reset_after=30, clock=clock)
    await _fail(breaker)
    await _fail(breaker, NotFoundError("manifest unknown"))  # the registry answered
    await _fail(breaker)
    assert _state(breaker) == "closed"


async def test_counts_only_the_given_errors(clock: Clock) -> None:
    breaker = CircuitBreaker("gitops", threshold=1, reset_after=30, clock=clock, counts=(ServiceUnavailableError,))
    await _fail(breaker, TransientError("branch kept moving"))  # contention, not an outage
    assert _state(breaker) == "closed"
    await _fail(breaker, ServiceUnavailableError("cannot fetch"))
    assert _state(breaker) == "open"


async def test_a_cancelled_probe_proves_nothing_and_frees_the_slot(clock: Clock) -> None:
    breaker = CircuitBreaker("argo", threshold=1, reset_after=5, clock=clock)
    await _fail(breaker)
    clock.now += 5
    with pytest.raises(asyncio.CancelledError):
        async with breaker:
            raise asyncio.CancelledError
    assert _state(breaker) == "half-open"
    assert await _succeed(breaker) == "ok"
    assert _state(breaker) == "closed"


async def test_states_snapshot_and_a_broken_listener_never_breaks_a_call(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker("snapshot-test", threshold=1, reset_after=5, clock=clock)
    assert breaker_states()["snapshot-test"] == "closed"

    def broken(_name: str, _state: str) -> None:
        raise RuntimeError("metrics down")

    unsubscribe = on_state_change(broken)
    try:
        await _fail(breaker)
    finally:
        unsubscribe()
    assert breaker_states()["snapshot-test"] == "open"
    assert "state listener" in caplog.text


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker("x", threshold=0)

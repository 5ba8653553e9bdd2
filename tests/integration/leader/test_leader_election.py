"""Leader election on a Lease, through the ``kubernetes`` client, against a local Lease server.

Time is a fake clock the tests step (the elector's ``clock``, ``now`` and ``sleep`` are
injected), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from forge.controller.leader import KubernetesLeases, LeaderElector, LeaseRecord, run_as_leader
from forge.errors import ConflictError, InvalidInputError
from forge.settings import ControllerSettings

from .conftest import LeaseServer

NS, NAME = "forge", "forge-controller"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC) + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


@pytest.fixture
def leases(lease_server: LeaseServer) -> Iterator[Callable[[], KubernetesLeases]]:
    made: list[KubernetesLeases] = []

    def make() -> KubernetesLeases:
        config = client.Configuration()
        config.host = lease_server.url
        store = KubernetesLeases.connect(client.ApiClient(config), namespace=NS, name=NAME, request_timeout=5)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def elector(store: KubernetesLeases, identity: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(
        store,
        identity=identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        clock=clock.monotonic,
        now=clock.now,
        sleep=clock.sleep,
    )


async def test_the_first_candidate_creates_the_lease(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock
) -> None:
    a = elector(leases(), "controller-a", clock)
    assert await a.try_acquire_or_renew()
    spec = lease_server.spec(NS, NAME)
    assert spec["holderIdentity"] == "controller-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]

    clock.t += 2
    assert await a.try_acquire_or_renew()
    renewed = lease_server.spec(NS, NAME)
    assert renewed["acquireTime"] == spec["acquireTime"]
    assert renewed["renewTime"] != spec["renewTime"]
    assert [m for m, _, _ in lease_server.requests] == ["GET", "POST", "GET", "PUT"]


async def test_a_standby_waits_while_the_leader_renews_and_takes_over_when_it_stops(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock
) -> None:
    a = elector(leases(), "controller-a", clock)
    b = elector(leases(), "controller-b", clock)
    assert await a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of a live leader: the standby never takes over
        assert not await b.try_acquire_or_renew()
        assert b.observed_holder == "controller-a"
        clock.t += 2
        assert await a.try_acquire_or_renew()

    # The leader stops renewing: the standby counts the lease duration from when it last saw a change.
    assert not await b.try_acquire_or_renew()
    clock.t += 14.9
    assert not await b.try_acquire_or_renew()
    clock.t += 0.1
    assert await b.try_acquire_or_renew()
    spec = lease_server.spec(NS, NAME)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("controller-b", 1)
    assert not await a.try_acquire_or_renew()
    assert a.observed_holder == "controller-b"


async def test_an_expiry_is_judged_by_the_local_clock_not_the_holders_renew_time(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock
) -> None:
    # renewTime says 2026-01-01, months before the candidate's wall clock: a skewed holder is not expired.
    lease_server.put(NS, NAME, "controller-x", duration=15, transitions=4)
    b = elector(leases(), "controller-b", clock)
    assert not await b.try_acquire_or_renew()
    clock.t += 15
    assert await b.try_acquire_or_renew()
    assert lease_server.spec(NS, NAME)["leaseTransitions"] == 5


async def test_two_candidates_racing_for_an_expired_lease_one_wins_by_resource_version(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock
) -> None:
    lease_server.put(NS, NAME, None, duration=1)  # released: free for anyone
    a_store, b_store = leases(), leases()
    b = elector(b_store, "controller-b", clock)
    a = elector(a_store, "controller-a", clock)

    class ReadThenLose:
        """b's store: after b reads, a acquires; b's replace then carries a stale resourceVersion."""

        async def get(self) -> LeaseRecord | None:
            record = await b_store.get()
            assert await a.try_acquire_or_renew()
            return record

        create = b_store.create
        replace = b_store.replace

    b._leases = ReadThenLose()
    assert not await b.try_acquire_or_renew()
    assert lease_server.requests[-1][2] == 409
    assert lease_server.spec(NS, NAME)["holderIdentity"] == "controller-a"

    stale = await b_store.get()
    assert stale is not None
    assert await a.try_acquire_or_renew()
    with pytest.raises(ConflictError, match="409"):
        await b_store.replace(LeaseRecord("controller-b", 15, resource_version=stale.resource_version))
    with pytest.raises(ConflictError):
        await b_store.create(LeaseRecord("controller-b", 15))


async def test_a_time_on_a_whole_second_is_written_as_a_micro_time(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock
) -> None:
    a = LeaderElector(
        leases(), identity="controller-a", clock=clock.monotonic, now=lambda: datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert await a.try_acquire_or_renew()  # the server refuses a time without six fraction digits
    assert lease_server.spec(NS, NAME)["renewTime"].startswith("2026-03-01T00:00:00.000001")


async def test_errors_of_the_api_mean_not_leader_and_are_logged(
    lease_server: LeaseServer,
    leases: Callable[[], KubernetesLeases],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = elector(leases(), "controller-a", clock)
    lease_server.fail_next[:] = [403, 500]
    with caplog.at_level(logging.WARNING, "forge.controller.leader"):
        assert not await a.try_acquire_or_renew()
        assert not await a.try_acquire_or_renew()
    assert "403" in caplog.text
    assert "RBAC" in caplog.text
    assert "500" in caplog.text
    assert await a.try_acquire_or_renew()


class Terms:
    """A ``lead`` callable that records each term and how it ended."""

    def __init__(self, stop: asyncio.Event, *, terms: int, obey: bool = True) -> None:
        self.stop = stop
        self.terms = terms
        self.obey = obey
        self.started: list[float] = []
        self.ended: list[str] = []
        self.clock: FakeClock | None = None

    async def __call__(self, stepping_down: asyncio.Event) -> None:
        assert self.clock is not None
        self.started.append(self.clock.t)
        if len(self.started) == self.terms:
            self.stop.set()
        try:
            await (stepping_down.wait() if self.obey else asyncio.Event().wait())
            self.ended.append("stepped down")
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise


@pytest.fixture
async def stop() -> AsyncIterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()


async def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock, stop: asyncio.Event
) -> None:
    a = elector(leases(), "controller-a", clock)
    terms = Terms(stop, terms=2)
    terms.clock = clock

    async def outage() -> None:
        while not terms.started:
            await asyncio.sleep(0)
        lease_server.fail_next[:] = [503] * 6  # every renew fails for 12 s (6 attempts, 2 s apart)

    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        group.create_task(outage())
        group.create_task(a.run(terms, stop))

    assert terms.ended == ["stepped down", "stepped down"]
    first, second = terms.started
    # stepped down after renew_deadline (10 s) of failures, then won the lease back as candidate
    assert second - first >= 10
    spec = lease_server.spec(NS, NAME)
    assert "holderIdentity" not in spec  # released on stop
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0


async def test_a_leader_that_sees_another_holder_stops_at_once_and_becomes_a_candidate(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock, stop: asyncio.Event
) -> None:
    a = elector(leases(), "controller-a", clock)
    terms = Terms(stop, terms=2)
    terms.clock = clock
    taken_at: list[float] = []

    async def takeover() -> None:
        while not terms.started:
            await asyncio.sleep(0)
        lease_server.put(NS, NAME, "controller-x", transitions=1)
        taken_at.append(clock.t)

    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        group.create_task(takeover())
        group.create_task(a.run(terms, stop))

    assert terms.ended == ["stepped down", "stepped down"]
    # the intruder never renews: a is candidate again only after a full lease duration unchanged
    assert terms.started[1] - taken_at[0] >= 15
    assert lease_server.spec(NS, NAME)["leaseTransitions"] == 2


async def test_reconcilers_that_ignore_stepping_down_are_cancelled_before_the_lease_expires(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock, stop: asyncio.Event
) -> None:
    a = elector(leases(), "controller-a", clock)
    terms = Terms(stop, terms=2, obey=False)
    terms.clock = clock

    async def takeover() -> None:
        while not terms.started:
            await asyncio.sleep(0)
        lease_server.put(NS, NAME, "controller-x")

    with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012 - the second term never stops by itself
        async with asyncio.timeout(10), asyncio.TaskGroup() as group:
            group.create_task(takeover())
            group.create_task(a.run(terms, stop))
            group.create_task(_stop_after(stop, terms))
    assert caught.group_contains(_DoneError)
    assert terms.ended[0] == "cancelled"


class _DoneError(Exception):
    pass


async def _stop_after(stop: asyncio.Event, terms: Terms) -> None:
    while len(terms.started) < 2:
        await asyncio.sleep(0)
    raise _DoneError


async def test_stop_releases_the_lease_so_the_standby_takes_over_at_once(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock, stop: asyncio.Event
) -> None:
    a = elector(leases(), "controller-a", clock)
    terms = Terms(stop, terms=1)
    terms.clock = clock
    async with asyncio.timeout(10):
        await a.run(terms, stop)
    assert terms.ended == ["stepped down"]
    assert not a.is_leader
    b = elector(leases(), "controller-b", clock)
    assert await b.try_acquire_or_renew()  # no wait for the 15 s lease


async def test_a_lead_that_returns_ends_the_run_and_releases(
    lease_server: LeaseServer, leases: Callable[[], KubernetesLeases], clock: FakeClock, stop: asyncio.Event
) -> None:
    a = elector(leases(), "controller-a", clock)

    async def lead(stepping_down: asyncio.Event) -> None:
        return None

    async with asyncio.timeout(10):
        await a.run(lead, stop)
    assert "holderIdentity" not in lease_server.spec(NS, NAME)


async def test_leader_election_off_runs_at_once_without_a_cluster(stop: asyncio.Event) -> None:
    seen: list[asyncio.Event] = []

    async def lead(stepping_down: asyncio.Event) -> None:
        seen.append(stepping_down)

    await run_as_leader(ControllerSettings(), lead, stop)
    assert seen == [stop]


def test_timings_must_leave_a_leader_time_to_step_down(leases: Callable[[], KubernetesLeases]) -> None:
    with pytest.raises(InvalidInputError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(leases(), identity="a", lease_duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(InvalidInputError, match="identity"):
        LeaderElector(leases(), identity="")

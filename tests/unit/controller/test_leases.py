"""forge.controller.leases: held claims are renewed in the background; a check renews one claim at once; a
block that ends unfinished (cancelled, a transient error, a claim lost) hands the claims it still holds back,
one that finished (or fails its item) keeps them.

The hand-back tests hold real claims of the memory store, with a lease no test outlives (its clock moves only
where a test takes a claim over): a second claimer taking a run at once can only mean it was handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from forge.controller.leases import ClaimLost, Claims, hand_back, holding
from forge.errors import ForgeError, PermanentError, ServiceUnavailableError, TransientError
from forge.ports.fakes import MemoryStore
from forge.runtime import instance_id

from .support import discovery, pending_run, until

LEASE = 3600.0
A, B = "controller-a", "controller-b"


class FakeRenewals:
    """The store's renewal: ``held`` are still the claimer's; ``down`` makes every renewal fail."""

    def __init__(self, held: set[UUID]) -> None:
        self.held = held
        self.down = False
        self.calls: list[list[UUID]] = []

    async def __call__(self, ids: Sequence[UUID]) -> set[UUID]:
        self.calls.append(list(ids))
        if self.down:
            raise ServiceUnavailableError("PostgreSQL is unavailable")
        return set(ids) & self.held

    async def release(self, ids: Sequence[UUID]) -> set[UUID]:
        return set()


async def test_held_claims_are_renewed_in_the_background_through_a_store_outage() -> None:
    one, two = uuid4(), uuid4()
    renewals = FakeRenewals({one, two})
    renewals.down = True
    async with holding(renewals, [one, two], release=renewals.release, lease=0.03, what="run") as claims:
        await until(lambda: len(renewals.calls) >= 2)  # a failed renewal is tried again on the next tick
        with pytest.raises(ServiceUnavailableError):
            await claims.check(one)  # the claim cannot be confirmed: nothing may be written
        renewals.down = False
        await claims.check(one)
        seen = len(renewals.calls)
        await until(lambda: len(renewals.calls) > seen + 1)
    assert sorted(renewals.calls[-1]) == sorted([one, two])
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "renew run claims"]  # none outlives the block


async def test_a_claim_taken_over_is_lost_for_good() -> None:
    mine, taken = uuid4(), uuid4()
    renewals = FakeRenewals({mine})
    async with holding(renewals, [mine, taken], release=renewals.release, lease=0.03, what="deployment") as claims:
        await until(lambda: len(renewals.calls) >= 1)  # the background renewal finds it taken over
        asked = len(renewals.calls)
        with pytest.raises(ClaimLost, match=f"deployment {taken}: its claim was taken over"):
            await claims.check(taken)
        await claims.check(mine)
        assert renewals.calls[asked] == [mine]  # a claim known lost is not asked about again
        await until(lambda: len(renewals.calls) > asked + 2)
        assert renewals.calls[-1] == [mine]  # nor renewed


def test_claimer_ids_are_unique_names() -> None:
    ids = {instance_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(1 <= len(i) <= 256 for i in ids)


class Clock:
    """The memory store's clock: still until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


def held_by(store: MemoryStore, claimer: str, ids: Sequence[UUID]) -> AbstractAsyncContextManager[Claims]:
    """``holding`` as a reconciler enters it: the store's renewal and release bound to ``claimer``."""
    renew = functools.partial(store.renew_execution_claims, claimer=claimer)
    release = functools.partial(store.release_execution_claims, claimer=claimer)
    return holding(renew, ids, release=release, lease=LEASE, what="run")


async def claimed_runs(store: MemoryStore, count: int = 1, *, claimer: str = A) -> list[UUID]:
    """``count`` discovered runs, claimed by ``claimer``."""
    ids = []
    for n in range(count):
        run = await pending_run(store, f"{n:040x}")
        await store.claim_discovery(limit=1)
        await store.record_discovery(run.id, discovery(), f"pipeline-runs/{run.id}/discovery.json")
        ids.append(run.id)
    assert [r.id for r in await store.claim_execution(limit=count, claimer=claimer, lease=LEASE)] == ids
    return ids


async def claimable(store: MemoryStore, claimer: str = B) -> list[UUID]:
    """What another controller claims now: within A's lease, only what A handed back."""
    return [r.id for r in await store.claim_execution(limit=10, claimer=claimer, lease=LEASE)]


async def test_a_cancelled_holder_hands_its_claim_back_and_stays_cancelled(store: MemoryStore) -> None:
    [run_id] = await claimed_runs(store)
    entered = asyncio.Event()

    async def works() -> None:
        async with held_by(store, A, [run_id]):
            entered.set()
            await asyncio.Event().wait()  # a hung push or submit

    task = asyncio.create_task(works())
    async with asyncio.timeout(10):
        await entered.wait()
    task.cancel()  # the controller stops (or lost its leadership)
    await asyncio.wait([task])
    assert task.cancelled()  # the cancellation is not swallowed
    assert await claimable(store) == [run_id]


async def test_a_transient_error_hands_the_claim_back(store: MemoryStore) -> None:
    [run_id] = await claimed_runs(store)
    with pytest.raises(TransientError, match="503"):
        async with held_by(store, A, [run_id]):
            raise TransientError("the engine answered 503")
    assert await claimable(store) == [run_id]


@pytest.mark.parametrize("ending", ["returns", "fails"])
async def test_a_finished_or_failing_block_keeps_its_claim(store: MemoryStore, ending: str) -> None:
    [run_id] = await claimed_runs(store)
    with pytest.raises(PermanentError) if ending == "fails" else contextlib.nullcontext():
        async with held_by(store, A, [run_id]):
            if ending == "fails":  # the caller fails the run next, under the claim
                raise PermanentError("the template is invalid")
    assert await claimable(store) == []
    assert await store.renew_execution_claims([run_id], claimer=A) == {run_id}


async def test_a_lost_claim_stays_its_new_holders_and_the_rest_is_handed_back(store: MemoryStore, clock: Clock) -> None:
    mine, taken = await claimed_runs(store, 2)

    async def works() -> None:
        async with held_by(store, A, [mine, taken]) as claims:
            clock.now += timedelta(seconds=LEASE * 2)  # A stalled past its lease
            await store.renew_execution_claims([mine], claimer=A)
            assert await claimable(store) == [taken]
            await claims.check(taken)

    with pytest.raises(ClaimLost):
        await works()
    assert await store.renew_execution_claims([taken], claimer=B) == {taken}  # B's claim is whole
    assert await claimable(store, "controller-c") == [mine]


async def test_a_release_that_fails_is_ignored_and_the_claim_ends_with_its_lease(
    store: MemoryStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    [run_id] = await claimed_runs(store)

    async def works() -> None:
        async with held_by(store, A, [run_id]):
            store.available = False
            raise ServiceUnavailableError("PostgreSQL is unavailable")

    with pytest.raises(TransientError, match="PostgreSQL"):
        await works()
    assert "could not hand back the claims on 1 run(s)" in caplog.text
    store.available = True
    assert await claimable(store) == []  # still A's, until its lease ends
    clock.now += timedelta(seconds=LEASE * 1.5)
    assert await claimable(store) == [run_id]


async def test_a_release_that_does_not_answer_lets_a_cancelled_task_end(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[list[UUID]] = []

    async def never_answers(ids: Sequence[UUID]) -> set[UUID]:
        asked.append(list(ids))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    entered = asyncio.Event()
    run_id = uuid4()

    async def stopping() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            await hand_back(never_answers, [run_id], what="run", within=0.01)

    task = asyncio.create_task(stopping())
    async with asyncio.timeout(10):
        await entered.wait()
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert asked == [[run_id]]  # the cancelled task did ask
    assert "could not hand back the claims on 1 run(s) within 0.01 s" in caplog.text


async def test_nothing_to_hand_back_asks_nothing() -> None:
    async def release(ids: Sequence[UUID]) -> set[UUID]:
        raise ForgeError(f"asked about {ids}")

    await hand_back(release, [], what="deployment")

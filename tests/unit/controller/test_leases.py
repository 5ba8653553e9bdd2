"""forge.controller.leases: held claims are renewed in the background; a check renews one claim at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest

from forge.controller.leases import ClaimLost, claimer_id, holding
from forge.errors import ServiceUnavailableError

from .support import until


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


async def test_held_claims_are_renewed_in_the_background_through_a_store_outage() -> None:
    one, two = uuid4(), uuid4()
    renewals = FakeRenewals({one, two})
    renewals.down = True
    async with holding(renewals, [one, two], lease=0.03, what="run") as claims:
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
    async with holding(renewals, [mine, taken], lease=0.03, what="deployment") as claims:
        await until(lambda: len(renewals.calls) >= 1)  # the background renewal finds it taken over
        asked = len(renewals.calls)
        with pytest.raises(ClaimLost, match=f"deployment {taken}: its claim was taken over"):
            await claims.check(taken)
        await claims.check(mine)
        assert renewals.calls[asked] == [mine]  # a claim known lost is not asked about again
        await until(lambda: len(renewals.calls) > asked + 2)
        assert renewals.calls[-1] == [mine]  # nor renewed


def test_claimer_ids_are_unique_names() -> None:
    ids = {claimer_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(1 <= len(i) <= 256 for i in ids)

"""Claim leases: a run or deployment a controller claimed stays its own only while it renews the claim.

A claim (``RunStore.claim_execution``, ``DeploymentStore.claim_deployments``) names its claimer, one
controller instance (``forge.runtime.instance_id``), and another controller takes it over once it has not been
renewed for the lease (``FORGE_CONTROLLER__CLAIM_LEASE``, 30 s), so a controller that dies while holding
claims leaves that work waiting one lease. While a reconciler works on a claimed item it holds it
(:func:`holding`): a background task renews the claim every third of the lease, and :meth:`Claims.check`
renews it once more just before each write. A renewal that finds another claimer means the claim was
taken over: ``check`` raises :class:`ClaimLost`, and the reconciler stops working on the item and writes
nothing for it (its new holder starts it over). A renewal that fails (the store away) is logged and tried
again on the next tick; ``check`` then raises the store's ``TransientError``, so nothing is written while
the claim cannot be confirmed.

A controller that stops cleanly does not leave its work waiting a lease: a ``holding`` block that ends
without finishing its item hands back the claims it still holds (:func:`hand_back`, the store's
``release_*_claims``), so another controller takes the item at once. Unfinished: cancelled (the controller
stops, or lost its leadership), a ``TransientError`` (the item is left for later: this controller claims it
again on its next poll unless another one did first) or ``ClaimLost`` (nothing of that item to hand back).
Otherwise the claims are kept: a block that returns has written its item's outcome (claimed no more), and
any other error is about to be written as the item's failure by the caller, under the claim, which no other
controller may take in between. A release that fails or does not answer within :data:`HAND_BACK_WITHIN`
seconds (the store away) is logged and ignored: the claim then ends with its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from uuid import UUID

from forge.errors import ForgeError, TransientError

__all__ = ["HAND_BACK_WITHIN", "ClaimLost", "Claims", "Release", "Renew", "hand_back", "holding"]

log = logging.getLogger("forge.controller.leases")

Renew = Callable[[Sequence[UUID]], Awaitable[set[UUID]]]
"""The store's renewal bound to the claimer (``renew_execution_claims``, ``renew_deployment_claims``):
the ids still held."""

Release = Callable[[Sequence[UUID]], Awaitable[set[UUID]]]
"""The store's release bound to the claimer (``release_execution_claims``, ``release_deployment_claims``):
the ids released."""

HAND_BACK_WITHIN = 5.0
"""Seconds a hand-back may take: a stopping controller waits no longer for a store that does not answer."""


class ClaimLost(Exception):  # noqa: N818 - what happened, not an error of the holder's
    """Another controller took over the claim on ``item_id``: stop working on it and write nothing for it."""

    def __init__(self, what: str, item_id: UUID) -> None:
        super().__init__(f"{what} {item_id}: its claim was taken over by another controller")
        self.item_id = item_id


class Claims:
    """The claims one reconciler holds on items of one kind (``what``: "run", "deployment")."""

    def __init__(self, renew: Renew, ids: Iterable[UUID], *, lease: float, what: str) -> None:
        self._renew = renew
        self._ids = set(ids)
        self._lost: set[UUID] = set()
        self.lease = lease
        self.what = what

    @property
    def held(self) -> list[UUID]:
        """The ids whose claims are still this holder's, as far as it knows (not found taken over)."""
        return sorted(self._ids - self._lost)

    async def check(self, item_id: UUID) -> None:
        """Renew the claim on ``item_id`` now; :class:`ClaimLost` when it was taken over (the store's
        ``TransientError`` when it cannot say). Call it just before each write."""
        if item_id not in self._lost:
            if item_id in await self._renew([item_id]):
                return
            self._lose({item_id})
        raise ClaimLost(self.what, item_id)

    async def keep_renewing(self) -> None:
        """Renew the held claims every third of the lease, until cancelled."""
        while True:
            await asyncio.sleep(self.lease / 3)
            ids = set(self.held)
            if not ids:
                continue
            try:
                still = await self._renew(sorted(ids))
            except ForgeError as exc:
                log.warning("renewing the claims on %d %s(s) failed; trying again: %s", len(ids), self.what, exc)
                continue
            self._lose(ids - still)

    def _lose(self, ids: set[UUID]) -> None:
        for item_id in sorted(ids):
            log.warning(
                "%s %s: its claim is no longer this controller's (taken over, or handed back after an error);"
                " this one stops working on it",
                self.what,
                item_id,
            )
        self._lost |= ids


async def hand_back(release: Release, ids: Iterable[UUID], *, what: str, within: float = HAND_BACK_WITHIN) -> None:
    """Release the claims on ``ids`` now, so another controller takes them at once. A release that fails or
    takes more than ``within`` seconds is logged and ignored (the claims end with their lease). Awaited in a
    cancelled task's ``finally`` it still runs (asyncio delivers a cancellation once); a second cancellation
    cuts it short and propagates."""
    held = sorted(set(ids))
    if not held:
        return
    try:
        async with asyncio.timeout(within):
            released = await release(held)
    except ForgeError as exc:
        log.warning("could not hand back the claims on %d %s(s); they end with their lease: %s", len(held), what, exc)
        return
    except TimeoutError:
        log.warning(
            "could not hand back the claims on %d %s(s) within %g s; they end with their lease", len(held), what, within
        )
        return
    log.info("handed back the claims on %d of %d %s(s)", len(released), len(held), what)


@contextlib.asynccontextmanager
async def holding(
    renew: Renew, ids: Iterable[UUID], *, release: Release, lease: float, what: str
) -> AsyncIterator[Claims]:
    """Hold the claims on ``ids`` (renewed in the background every third of ``lease``) for the block, and
    hand those still held back (``release``) when the block ends unfinished: cancelled, or with a
    ``TransientError`` or ``ClaimLost``. Returning, or any other error, keeps them (see the module)."""
    claims = Claims(renew, ids, lease=lease, what=what)
    renewing = asyncio.create_task(claims.keep_renewing(), name=f"renew {what} claims")
    unfinished = False
    try:
        yield claims
    except (asyncio.CancelledError, TransientError, ClaimLost):
        unfinished = True
        raise
    finally:
        renewing.cancel()
        await asyncio.wait([renewing])
        if not renewing.cancelled() and (error := renewing.exception()) is not None:  # a bug: say so
            log.error("renewing the claims on %ss stopped", what, exc_info=error)
        if unfinished:
            await hand_back(release, claims.held, what=what)

"""Claim leases: a run or deployment a controller claimed stays its own only while it renews the claim.

A claim (``RunStore.claim_execution``, ``DeploymentStore.claim_deployments``) names its claimer, one
controller instance (:func:`claimer_id`), and another controller takes it over once it has not been
renewed for the lease (``FORGE_CONTROLLER__CLAIM_LEASE``, 30 s), so a controller that dies while holding
claims leaves that work waiting one lease. While a reconciler works on a claimed item it holds it
(:func:`holding`): a background task renews the claim every third of the lease, and :meth:`Claims.check`
renews it once more just before each write. A renewal that finds another claimer means the claim was
taken over: ``check`` raises :class:`ClaimLost`, and the reconciler stops working on the item and writes
nothing for it (its new holder starts it over). A renewal that fails (the store away) is logged and tried
again on the next tick; ``check`` then raises the store's ``TransientError``, so nothing is written while
the claim cannot be confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from uuid import UUID, uuid4

from forge.errors import ForgeError

__all__ = ["ClaimLost", "Claims", "Renew", "claimer_id", "holding"]

log = logging.getLogger("forge.controller.leases")

Renew = Callable[[Sequence[UUID]], Awaitable[set[UUID]]]
"""The store's renewal bound to the claimer (``renew_execution_claims``, ``renew_deployment_claims``):
the ids still held."""


def claimer_id() -> str:
    """A name for this controller instance that no other instance has: host, process and a random part."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{uuid4().hex[:12]}"


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
            ids = self._ids - self._lost
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
                "%s %s: its claim was taken over by another controller; this one stops working on it",
                self.what,
                item_id,
            )
        self._lost |= ids


@contextlib.asynccontextmanager
async def holding(renew: Renew, ids: Iterable[UUID], *, lease: float, what: str) -> AsyncIterator[Claims]:
    """Hold the claims on ``ids`` (renewed in the background every third of ``lease``) for the block."""
    claims = Claims(renew, ids, lease=lease, what=what)
    renewing = asyncio.create_task(claims.keep_renewing(), name=f"renew {what} claims")
    try:
        yield claims
    finally:
        renewing.cancel()
        await asyncio.wait([renewing])
        if not renewing.cancelled() and (error := renewing.exception()) is not None:  # a bug: say so
            log.error("renewing the claims on %ss stopped", what, exc_info=error)

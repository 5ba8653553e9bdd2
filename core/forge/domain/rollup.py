"""A task's status follows its steps, a phase's its tasks (DESIGN §4: fail-fast).

``rollup`` derives a parent's status from its children's; ``settle`` applies it to the parent's
current status so that a parent never goes back to ``pending`` and a final parent never changes::

    any child failed                      -> failed      (fail-fast: at once, even while others run)
    else every child final:
        any cancelled                     -> cancelled
        all skipped (or no children)      -> skipped
        otherwise (success and skipped)   -> success
    else any child running or succeeded   -> running     (also between two steps)
    else                                  -> pending     (the rest wait; skipped/cancelled ones did no work)

Children that only move along ``ensure_transition`` move the parent along it too (the unit tests
check this with hypothesis). ``settle`` also handles parents moved by hand (``PUT .../status``):
a ``running`` parent whose children all end ``skipped`` becomes ``cancelled`` (it started, but none
of its work ran), and a ``pending`` one may go straight to ``success``.
"""

from __future__ import annotations

from collections.abc import Iterable

from forge.domain.status import Status

__all__ = ["rollup", "settle"]


def rollup(children: Iterable[Status]) -> Status:
    """The status a parent has when its children have ``children`` (order does not matter)."""
    seen = frozenset(children)
    if Status.FAILED in seen:
        return Status.FAILED
    if all(s.is_final for s in seen):
        return _finished(seen)
    if Status.RUNNING in seen or Status.SUCCESS in seen:
        return Status.RUNNING
    return Status.PENDING


def _finished(seen: frozenset[Status]) -> Status:
    """The parent of children that are all final (and none failed)."""
    if Status.CANCELLED in seen:
        return Status.CANCELLED
    if seen <= {Status.SKIPPED}:
        return Status.SKIPPED
    return Status.SUCCESS


def settle(current: Status, children: Iterable[Status]) -> Status:
    """The parent's next status: ``current`` when final or when the children say only ``pending``."""
    if current.is_final:
        return current
    derived = rollup(children)
    if derived == Status.PENDING:
        return current
    if current == Status.RUNNING and derived == Status.SKIPPED:
        return Status.CANCELLED
    return derived

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.domain.rollup import rollup, settle
from forge.domain.status import Status, allowed_next, ensure_transition

statuses = st.sampled_from(Status)
children = st.lists(statuses, max_size=8)
P, R, S, F, C, K = (Status.PENDING, Status.RUNNING, Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.SKIPPED)


@pytest.mark.parametrize(
    ("kids", "expected"),
    [
        ([P, P], P),
        ([R, P], R),
        ([S, P], R),
        ([S, S], S),
        ([S, K], S),
        ([K, K], K),
        ([], K),
        ([F, R], F),
        ([F, C, S], F),
        ([C, S, K], C),
        ([C, P], P),
        ([K, P], P),
        ([C, R], R),
    ],
)
def test_rollup_table(kids: list[Status], expected: Status) -> None:
    assert rollup(kids) == expected


@given(children)
def test_any_failure_fails_the_parent_at_once(kids: list[Status]) -> None:
    assert (rollup(kids) == F) == (F in kids)


@given(children)
def test_final_exactly_when_every_child_is_final_or_one_failed(kids: list[Status]) -> None:
    assert rollup(kids).is_final == (F in kids or all(k.is_final for k in kids))


@given(children)
def test_success_needs_work_done_and_nothing_bad(kids: list[Status]) -> None:
    if rollup(kids) == S:
        assert S in kids
        assert set(kids) <= {S, K}


@given(children, st.randoms())
def test_order_does_not_matter(kids: list[Status], rnd: object) -> None:
    shuffled = list(kids)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rollup(shuffled) == rollup(kids)


@given(st.sampled_from([S, F, C, K]), children)
def test_a_final_parent_never_changes(current: Status, kids: list[Status]) -> None:
    assert settle(current, kids) == current


@given(st.sampled_from([P, R]), children)
def test_settle_never_goes_back_to_pending(current: Status, kids: list[Status]) -> None:
    new = settle(current, kids)
    if current == R:
        assert new != P
    if new != current:  # forward only: a legal transition, or (states set by hand) from pending to an end
        assert new in allowed_next(current) or (current == P and new == S)


def _advance(kids: list[Status], draw: st.DrawFn) -> list[Status]:
    """Move one child along a legal transition, as a worker would."""
    movable = [i for i, k in enumerate(kids) if allowed_next(k)]
    if not movable:
        return kids
    i = draw(st.sampled_from(movable))
    nxt = draw(st.sampled_from(sorted(allowed_next(kids[i]))))
    ensure_transition("child", kids[i], nxt)
    return [*kids[:i], Status(nxt), *kids[i + 1 :]]


@st.composite
def histories(draw: st.DrawFn) -> list[list[Status]]:
    kids = [P] * draw(st.integers(min_value=1, max_value=5))
    steps = [kids]
    for _ in range(draw(st.integers(min_value=0, max_value=15))):
        kids = _advance(kids, draw)
        steps.append(kids)
    return steps


@given(histories())
def test_children_moving_forward_move_the_parent_forward(history: list[list[Status]]) -> None:
    parent = P
    for kids in history:
        new = settle(parent, kids)
        if new != parent:
            ensure_transition("parent", parent, new)  # strictly legal, never a shortcut
        parent = new
    if all(k.is_final for k in history[-1]):
        assert parent.is_final


def test_settle_cases_set_by_hand() -> None:
    assert settle(R, [K, K]) == C  # marked running by hand, none of its work ran
    assert settle(P, [S]) == S
    assert settle(R, [P, P]) == R
    assert settle(P, [P, K]) == P

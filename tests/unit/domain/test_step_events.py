from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from forge.domain.events import EventKind, StepEvent, StepState, advance, event_subject
from forge.domain.status import Status, ensure_transition

RUN, STEP = UUID(int=1), UUID(int=2)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
P, R, S, F, C, K = (Status.PENDING, Status.RUNNING, Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.SKIPPED)
KINDS: list[EventKind] = ["started", "retrying", "success", "failed"]
PENDING = StepState(P)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    kind: EventKind,
    attempt: int = 1,
    *,
    exit_code: int | None = None,
    logs_key: str | None = None,
    message: str | None = None,
    when: int = 0,
    started: int | None = None,
) -> StepEvent:
    return StepEvent(
        run_id=RUN,
        step_id=STEP,
        attempt=attempt,
        kind=kind,
        exit_code=exit_code,
        logs_key=logs_key,
        message=message,
        at=at(when),
        started_at=None if started is None else at(started),
    )


def running(attempt: int = 1, **fields: object) -> StepState:
    return replace(StepState(R, attempts=attempt, started_at=at(0)), **fields)  # type: ignore[arg-type]


# -- the event model ---------------------------------------------------------------------------------


def test_event_status_key_and_subject() -> None:
    assert [ev(k).status for k in KINDS] == [R, R, S, F]
    assert ev("retrying", 2).key == f"{STEP}.2.retrying"
    assert event_subject(RUN) == f"pipeline.events.{RUN}"
    assert StepEvent(run_id=RUN, step_id=STEP, attempt=1, kind="started").at.tzinfo is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"attempt": 0},
        {"kind": "cancelled"},
        {"message": "x" * 4001},
        {"surprise": True},
        {"version": 2},
    ],
)
def test_invalid_events_are_rejected(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"run_id": RUN, "step_id": STEP, "attempt": 1, "kind": "started", **bad}
    with pytest.raises(ValidationError):
        StepEvent.model_validate(fields)


def test_events_round_trip_as_json() -> None:
    event = ev("failed", 2, exit_code=1, logs_key="logs/x", message="boom", when=5, started=3)
    assert StepEvent.model_validate_json(event.model_dump_json()) == event


# -- advance -----------------------------------------------------------------------------------------


def test_started_moves_a_pending_step_to_running() -> None:
    assert advance(PENDING, ev("started", logs_key="logs/1", when=3)) == StepState(
        R, attempts=1, logs_key="logs/1", started_at=at(3)
    )


@pytest.mark.parametrize(("kind", "status"), [("success", S), ("failed", F)])
def test_a_final_event_of_a_pending_step_applies_whole(kind: EventKind, status: Status) -> None:
    event = ev(kind, exit_code=7, logs_key="logs/1", message="m", when=9, started=4)
    assert advance(PENDING, event) == StepState(
        status, attempts=1, exit_code=7, logs_key="logs/1", message="m", started_at=at(4), completed_at=at(9)
    )
    assert advance(PENDING, ev(kind, when=9)) == StepState(status, attempts=1, started_at=at(9), completed_at=at(9))


def test_a_final_event_keeps_what_the_attempt_recorded() -> None:
    state = running(logs_key="logs/1", message="working")
    done = advance(state, ev("success", exit_code=0, when=8, started=5))
    assert done == StepState(
        S, attempts=1, exit_code=0, logs_key="logs/1", message="working", started_at=at(0), completed_at=at(8)
    )


def test_a_repeated_started_changes_nothing() -> None:
    assert advance(running(), ev("started", when=99)) is None
    assert advance(running(2), ev("started", 2, logs_key="logs/other")) is None  # the first report stands


@pytest.mark.parametrize("final", [S, F, C, K])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_a_final_step_never_changes(final: Status, kind: EventKind, attempt: int) -> None:
    assert (
        advance(StepState(final, attempts=1, exit_code=1, completed_at=at(1)), ev(kind, attempt, exit_code=0)) is None
    )


@pytest.mark.parametrize("kind", KINDS)
def test_events_of_an_older_attempt_are_stale(kind: EventKind) -> None:
    assert advance(running(2, exit_code=3), ev(kind, 1, exit_code=0, message="late")) is None


def test_retrying_keeps_the_step_running_with_its_exit_code() -> None:
    retried = advance(running(), ev("retrying", exit_code=2, message="exit 2, retrying", when=4))
    assert retried == running(exit_code=2, message="exit 2, retrying")
    assert retried is not None
    assert advance(retried, ev("retrying", exit_code=2, message="exit 2, retrying", when=4)) is None  # duplicate
    assert advance(retried, ev("started")) is None  # attempt 1 already began


def test_retrying_of_a_pending_step_starts_it() -> None:
    assert advance(PENDING, ev("retrying", exit_code=2, when=6)) == StepState(
        R, attempts=1, exit_code=2, started_at=at(6)
    )


def test_a_later_attempt_forgets_the_old_exit_code() -> None:
    state = running(exit_code=2, logs_key="logs/1")
    again = advance(state, ev("started", 2, when=7))
    assert again == running(2, exit_code=None, logs_key="logs/1")  # the step started at its first attempt
    newer_retry = advance(state, ev("retrying", 3))
    assert newer_retry is not None
    assert (newer_retry.attempts, newer_retry.exit_code) == (3, None)
    jump = advance(state, ev("success", 3, exit_code=0, when=9))
    assert jump == StepState(S, attempts=3, exit_code=0, logs_key="logs/1", started_at=at(0), completed_at=at(9))


def test_a_final_event_without_exit_code_keeps_the_one_recorded() -> None:
    done = advance(running(exit_code=4), ev("failed", when=2))
    assert done == StepState(F, attempts=1, exit_code=4, started_at=at(0), completed_at=at(2))


# -- properties --------------------------------------------------------------------------------------

times = st.integers(min_value=0, max_value=10_000).map(at)
events = st.builds(
    StepEvent,
    run_id=st.just(RUN),
    step_id=st.just(STEP),
    attempt=st.integers(min_value=1, max_value=3),
    kind=st.sampled_from(KINDS),
    exit_code=st.none() | st.integers(min_value=0, max_value=255),
    logs_key=st.none() | st.sampled_from(["logs/1", "logs/2"]),
    message=st.none() | st.sampled_from(["", "ok", "boom"]),
    at=times,
    started_at=st.none() | times,
)


def _legal(previous: Status, new: Status) -> None:
    """``previous -> new`` along ``ensure_transition``; a final event of a never-started step went through running."""
    if previous == P and new.is_final:
        ensure_transition("step", P, R)
        ensure_transition("step", R, new)
    else:
        ensure_transition("step", previous, new)


@given(st.lists(events, max_size=12))
def test_any_sequence_of_events_moves_a_step_forward_only(history: list[StepEvent]) -> None:
    state = PENDING
    for event in history:
        new = advance(state, event)
        if state.status.is_final or event.attempt < state.attempts:
            assert new is None
        if new is None:
            continue
        assert new != state
        assert new.status == event.status
        _legal(state.status, new.status)
        assert new.attempts == max(state.attempts, event.attempt) >= state.attempts
        assert new.started_at is not None
        assert state.started_at is None or new.started_at == state.started_at  # the step started once
        assert (new.completed_at is not None) == new.status.is_final
        assert advance(new, event) is None  # a redelivered event changes nothing
        state = new


@given(st.sampled_from([S, F, C, K]), st.integers(min_value=0, max_value=3), events)
def test_a_final_step_never_moves(final: Status, attempts: int, event: StepEvent) -> None:
    assert advance(StepState(final, attempts=attempts, completed_at=T0), event) is None


@given(st.lists(events, max_size=12))
def test_the_highest_attempt_seen_is_the_attempt_recorded(history: list[StepEvent]) -> None:
    state = PENDING
    seen = 0
    for event in history:
        state = advance(state, event) or state
        if not state.status.is_final:
            seen = max(seen, event.attempt)
            assert state.attempts == seen

"""Durations, depends expressions and retry backoff of the local engine (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase
from forge.workflows.engine import expressions as ex
from forge.workflows.engine.durations import parse_duration
from forge.workflows.engine.spec import Retry


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("10", 10.0),
        (3, 3.0),
        ("0.5", 0.5),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "s5", "-1s", "1m 30s", True, -2])
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(InvalidInputError, match=r"backoff\.duration"):
        parse_duration(text, field="backoff.duration")


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=59))
def test_parse_duration_minutes_and_seconds(minutes: int, seconds: int) -> None:
    assert parse_duration(f"{minutes}m{seconds}s") == minutes * 60 + seconds


def _eval(text: str, **phases: NodePhase) -> bool:
    return ex.evaluate(ex.parse_depends(text, where="t"), phases, lambda _t: set())


def test_bare_name_means_succeeded_or_skipped() -> None:
    assert _eval("a", a=NodePhase.SUCCEEDED)
    assert _eval("a", a=NodePhase.SKIPPED)
    assert not _eval("a", a=NodePhase.FAILED)
    assert not _eval("a", a=NodePhase.OMITTED)
    expr = ex.parse_depends("a", where="t")
    assert ex.evaluate(expr, {"a": NodePhase.FAILED}, lambda _t: {NodePhase.FAILED})


def test_precedence_and_parentheses() -> None:
    s, f = NodePhase.SUCCEEDED, NodePhase.FAILED
    assert _eval("a.Failed || b && c", a=f, b=f, c=f)  # && binds tighter
    assert not _eval("(a.Failed || b) && c", a=f, b=f, c=f)
    assert _eval("!a.Succeeded && !(b.Failed)", a=f, b=s)
    assert _eval("a-b.Errored", **{"a-b": NodePhase.ERROR})
    assert _eval("a.Omitted || a.Skipped", a=NodePhase.OMITTED)
    assert not _eval("a.Daemoned", a=s)


def test_refs_and_dependencies() -> None:
    expr = ex.parse_depends("(a.Failed || b) && !c.Skipped", where="t")
    assert [r.task for r in ex.refs(expr)] == ["a", "b", "c"]
    assert ex.from_dependencies([]) is None
    assert ex.from_dependencies(["x"]) == ex.Ref("x")
    assert ex.from_dependencies(["x", "y"]) == ex.And((ex.Ref("x"), ex.Ref("y")))


@pytest.mark.parametrize("text", ["a &&", "&& a", "(a", "a)", "a b", "a.AnySucceeded", "a == b", "a.", "!"])
def test_invalid_depends(text: str) -> None:
    with pytest.raises(InvalidInputError, match="task 'x'"):
        ex.parse_depends(text, where="task 'x'")


def test_retry_backoff_and_policies() -> None:
    retry = Retry(limit=5, duration=1.0, factor=2.0, cap=5.0)
    assert [retry.delay(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    assert Retry(policy="OnFailure").retries_on(NodePhase.FAILED)
    assert not Retry(policy="OnFailure").retries_on(NodePhase.ERROR)
    assert Retry(policy="OnError").retries_on(NodePhase.ERROR)
    assert not Retry(policy="OnError").retries_on(NodePhase.FAILED)
    assert Retry(policy="Always").retries_on(NodePhase.ERROR)
    assert not Retry(policy="Always").retries_on(NodePhase.SUCCEEDED)

"""DAG task names (Argo's workflowFieldNameFmt, no leading digit, our 63-character cap) and labels."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from forge.workflows.templates import MAX_TASK_NAME, label_value, task_names

_ARGO_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True)


def test_readable_names() -> None:
    assert task_names([("test", "app", "unit")]) == {("test", "app", "unit"): "test-app-unit"}


def test_long_names_are_cut_with_a_hash() -> None:
    triple = ("integration", "a" * 40, "b" * 40)
    name = task_names([triple])[triple]
    assert len(name) == MAX_TASK_NAME
    assert name.startswith("integration-aaaa")
    assert re.fullmatch(r".*-[0-9a-f]{8}", name)


def test_names_that_would_clash_get_a_hash() -> None:
    one, two, three = ("test", "a-b", "c"), ("test", "a", "b-c"), ("test", "x", "y")
    names = task_names([one, two, three])
    assert names[one] != names[two]
    assert names[one].startswith("test-a-b-c-")
    assert names[two].startswith("test-a-b-c-")
    assert names[three] == "test-x-y"


@given(st.lists(st.tuples(_NAME, _NAME, _NAME), max_size=30))
def test_names_are_valid_and_unique(triples: list[tuple[str, str, str]]) -> None:
    names = task_names(triples)
    assert len(set(names.values())) == len(names) == len(set(triples))
    for name in names.values():
        assert _ARGO_NAME.match(name)
        assert not name[0].isdigit()  # Argo refuses a leading digit with `depends`
        assert len(name) <= MAX_TASK_NAME


@given(st.text(max_size=120))
def test_label_values_are_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63
    assert _LABEL_VALUE.match(value)


def test_label_values() -> None:
    assert label_value("c0ffee") == "c0ffee"
    assert label_value("acme/mono").startswith("acme.mono-")
    assert label_value("acme/mono") != label_value("acme.mono")
    assert len(label_value("f" * 64)) == 63

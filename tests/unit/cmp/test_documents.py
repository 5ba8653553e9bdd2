"""YAML and JSON from untrusted bytes: JSON first, multi-document YAML, alias bombs refused."""

from __future__ import annotations

import pytest

from forge.cmp.documents import load_documents
from forge.errors import InvalidInputError, LimitExceededError


def test_json_is_read_without_yaml() -> None:
    assert load_documents(b'{"a": [1, 2.5, true, null, "yes"]}', "x") == [{"a": [1, 2.5, True, None, "yes"]}]


def test_multi_document_yaml_drops_empty_documents() -> None:
    text = b"---\n# only a comment\n---\na: 1\n---\n---\nb: [x, y]\n...\n"
    assert load_documents(text, "x") == [{"a": 1}, {"b": ["x", "y"]}]


def test_yaml_that_starts_like_json_still_reads() -> None:
    assert load_documents(b'{"a": 1}\n---\n{"b": 2}\n', "x") == [{"a": 1}, {"b": 2}]


def test_aliases_are_expanded_into_independent_nodes() -> None:
    [document] = load_documents(b"base: &b {x: 1}\ncopy: *b\n", "x")
    assert document == {"base": {"x": 1}, "copy": {"x": 1}}
    assert document["base"] is not document["copy"]


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(LimitExceededError, match="alias bomb"):
        load_documents("\n".join(lines).encode(), "bomb.yaml")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="contains it"):
        load_documents(b"a: &a [1, *a]\n", "x")


def test_timestamps_stay_text() -> None:
    assert load_documents(b"day: 2024-01-31\n", "x") == [{"day": "2024-01-31"}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"a: !!binary aGVsbG8=\n", "bytes value is not allowed"),
        (b"? [1, 2]\n: x\n", "not valid YAML|not a string"),
        (b"1: one\n", "mapping key 1 is not a string"),
        (b"a: .nan\n", "not a value"),
        (b"a: [1, 2\n", "not valid YAML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"a: 1\na: 2\n", "not valid YAML"),
    ],
)
def test_what_is_not_plain_yaml_is_refused(text: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        load_documents(text, "x")


def test_deep_nesting_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidInputError, match=r"nested too deeply|not valid YAML"):
        load_documents(b"[" * 100_000 + b"]" * 100_000, "x")

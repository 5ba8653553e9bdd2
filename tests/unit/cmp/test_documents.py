"""YAML and JSON from untrusted bytes: JSON first, multi-document YAML, alias bombs refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.cmp.support import ENV_DATA, environment_config, pointer_document, to_yaml

from forge.cmp.documents import MAX_NODES, _block, _yaml, load_documents
from forge.errors import InvalidInputError, LimitExceededError
from forge.gitops.models import to_yaml as gitops_yaml


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


# The plain-block reader (GitOps files without ruamel): it answers exactly as ruamel would, or declines.

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["yes", "no", "on", "1.10", "0123", "-0", "2024-01-01", "a: b", "x #y", "sha256:ab", "~", "''"]),
    st.sampled_from(
        ["4f1c3a0b9e8d", "1e5", "1E5", "0x1f", "0o17", "0b101", "1_000", "12ab", "500m", "1.5f", "2024-1-1x"]
    ),
    st.from_regex(r"[0-9][0-9a-fA-FxXoObB_.eE+-]{0,6}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_./:@+=,~ -]{0,10}", fullmatch=True),  # the plausible ones the reader accepts
    st.from_regex(r"[0-9][0-9a-zA-Z_.-]{0,8}", fullmatch=True),
)
_KEYS = st.one_of(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["on", "true", "a.b/c-d", "forge.io/x", "1"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,6}", fullmatch=True),
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=25,
)


def _ruamel(text: str) -> list[Any]:
    return [doc for doc in _yaml(text, "x", MAX_NODES) if doc is not None]


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_KEYS, _TREES, min_size=1, max_size=5), st.booleans())
def test_the_block_reader_agrees_with_ruamel_or_declines(document: dict[str, Any], block_style: bool) -> None:
    """Documents as the GitOps writer dumps them (block style), and in ruamel's default style."""
    text = gitops_yaml(document).decode() if block_style else to_yaml(document)
    block = _block(text, MAX_NODES)
    if block is not None:
        assert [block[0]] == _ruamel(text), text


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb:\n  c: 'x'\n  d: \"y\"\n  e: []\n  f: {}\nl:\n- 1\n- two\n- k: v\n  m:\n    o: -3\n",
        "---\nports:\n  - name: http\n    port: 80\n  - name: https\n    port: 443\nflag: false\nnone: null\n",
        "s: 'it''s'\nt: a,b=c~d@e\nu: http://x.y/z:1\nv: Yesterday\n",
    ],
)
def test_the_block_reader_reads_block_style(text: str) -> None:
    block = _block(text, MAX_NODES)
    assert block is not None
    assert [block[0]] == _ruamel(text)
    assert load_documents(text.encode(), "x") == _ruamel(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1 # comment\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: 1.5\n",
        "a: 2024-01-01\n",
        "a: yes\n",
        "a:\n",
        "a: 1\na: 2\n",
        "a: x\n  continued\n",
        "a: [1, 2]\n",
        "a: 'unclosed\n  quote'\n",
        'a: "esc\\tape"\n',
        "- 1\n- 2\n---\n- 3\n",
        "a: 01\n",
        "true: 1\n",
        "a:\n- - 1\n",
        "a: 1\r\nb: 2\r\n",
    ],
)
def test_the_block_reader_declines_what_it_does_not_know(text: str) -> None:
    assert _block(text, MAX_NODES) is None


def test_the_gitops_files_are_read_without_ruamel() -> None:
    data = {**ENV_DATA, "labels": {"team": "shop"}, "hosts": ["a", "b"]}
    pointer = gitops_yaml(pointer_document("sha256:" + "ab" * 32)).decode()
    environment = gitops_yaml(environment_config("dev", data)).decode()
    for text in (pointer, environment):
        block = _block(text, MAX_NODES)
        assert block is not None, text
        assert [block[0]] == _ruamel(text)


def test_the_block_reader_keeps_the_node_budget() -> None:
    text = "a:\n" + "".join(f"- {i}\n" for i in range(20))
    assert _block(text, 22) is not None  # the mapping, the list and 20 items
    assert _block(text, 21) is None  # ruamel's path then refuses it with the budget's message

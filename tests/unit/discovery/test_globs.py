"""The glob translator against examples and a segment-by-segment reference matcher."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.discovery.globs import glob_matches


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("uv.lock", "uv.lock", True),
        ("uv.lock", "sub/uv.lock", False),
        ("**/uv.lock", "uv.lock", True),
        ("**/uv.lock", "a/b/uv.lock", True),
        ("/uv.lock", "uv.lock", True),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),
        ("docs/*", "docs/sub/a.md", True),  # docs/sub matches, and everything inside it
        ("docs", "docs/sub/a.md", True),
        ("docs/", "docs/a.md", True),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("a/**", "a/x/y", True),
        ("a/**", "a", False),
        ("**", "anything/at/all", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab]x", "bx", True),
        ("[!ab]x", "bx", False),
        ("[!ab]x", "cx", True),
        ("[a-c]x", "cx", True),
        ("x[", "x[", True),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("a.b", "axb", False),
        ("", "a", False),
    ],
)
def test_examples(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


def _reference(pattern: str, path: str) -> bool:
    """Segment-wise matcher: fnmatch per segment (never across '/'), '**' spans segments, and a
    pattern matching a directory matches everything below it."""
    pattern_parts = [p for p in pattern.strip("/").split("/") if p]
    path_parts = path.split("/")
    if not pattern_parts:
        return False

    def match(i: int, j: int) -> bool:
        if i == len(pattern_parts):
            return j <= len(path_parts) and (j == len(path_parts) or j > 0)
        part = pattern_parts[i]
        if part == "**":
            if i == len(pattern_parts) - 1:
                return j < len(path_parts)
            return any(match(i + 1, k) for k in range(j, len(path_parts) + 1))
        if j >= len(path_parts):
            return False
        return fnmatch.fnmatchcase(path_parts[j], re.sub(r"\*+", "*", part)) and match(i + 1, j + 1)

    return match(0, 0)


_segment = st.text(alphabet="ab*?", min_size=1, max_size=4)
_pattern = st.lists(st.one_of(_segment, st.just("**")), min_size=1, max_size=4).map("/".join)
_path = st.lists(st.text(alphabet="ab", min_size=1, max_size=3), min_size=1, max_size=5).map("/".join)


@given(_pattern, _path)
def test_matches_the_reference(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) is _reference(pattern, path)


@given(st.text(alphabet="ab*?", min_size=1, max_size=5), _path)
def test_single_star_never_crosses_a_slash_at_the_end(segment: str, path: str) -> None:
    # a one-segment pattern matches a path iff it matches the path's first segment
    assert glob_matches(segment, path) is fnmatch.fnmatchcase(
        path.split("/", maxsplit=1)[0], re.sub(r"\*+", "*", segment)
    )

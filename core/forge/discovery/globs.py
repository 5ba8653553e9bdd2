"""Glob patterns of ``paths`` and ``affects_all``: gitignore-like, always anchored at the repo root.

- ``*`` matches any run of characters except ``/``; ``?`` one character except ``/``;
  ``[abc]``/``[!abc]``/``[a-z]`` one character of (not of) the class, never ``/``;
  ``\\x`` matches ``x`` literally.
- ``**`` as a whole segment matches any number of segments: ``**/x`` (``x`` at any depth),
  ``a/**/b`` (``a/b``, ``a/x/y/b``), ``a/**`` (everything inside ``a``). Elsewhere ``**`` is ``*``.
- A pattern is anchored at the repository root (a leading ``/`` is optional), so ``uv.lock``
  matches the root lockfile only; write ``**/uv.lock`` for every depth.
- A pattern that matches a directory matches everything inside it: ``docs`` matches
  ``docs/a.md``. A trailing ``/`` is ignored.
"""

from __future__ import annotations

import functools
import re

__all__ = ["glob_matches", "glob_regex"]


def glob_matches(pattern: str, path: str) -> bool:
    """Whether repo-relative ``path`` matches ``pattern``."""
    return glob_regex(pattern).fullmatch(path) is not None


@functools.lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The compiled regular expression (use with ``fullmatch``) of ``pattern``."""
    segments = [s for s in pattern.strip("/").split("/") if s]
    if not segments:
        return re.compile(r"(?!)")  # matches nothing
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:.*/)?")
        else:
            out.append(_segment(segment) + ("" if last else "/"))
    return re.compile("".join(out) + "(?:/.*)?", re.DOTALL)


def _segment(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i < n:
            out.append(re.escape(segment[i]))
            i += 1
        elif char == "[":
            klass, i = _klass(segment, i)
            out.append(klass)
        else:
            out.append(re.escape(char))
    return "".join(out)


def _klass(segment: str, start: int) -> tuple[str, int]:
    """A ``[...]`` class starting after ``[``; a ``[`` without its ``]`` is literal."""
    i, n = start, len(segment)
    negate = i < n and segment[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < n and segment[i] == "]":  # a leading ] is a member
        i += 1
    while i < n and segment[i] != "]":
        i += 1
    if i >= n:
        return re.escape("["), start
    members = segment[body_start:i].replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[").replace("]", "\\]")
    # keep ranges (a-z) but never allow "/"
    return ("[^/" + members + "]" if negate else "(?!/)[" + members + "]"), i + 1

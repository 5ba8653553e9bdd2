"""NATS subject and name rules, as the server and nats-py apply them (for the in-memory bus).

Subjects are ``.``-separated tokens; in a pattern ``*`` stands for one token and a final ``>``
for one or more. nats-py checks a published subject loosely (not empty, no whitespace) and a
subscribed one strictly (also no empty token, no misplaced wildcard); names of streams and
consumers become file names on the server, so they exclude ``. * > / \\`` and whitespace.
"""

from __future__ import annotations

import re

__all__ = ["is_valid_name", "is_valid_pattern", "is_valid_subject", "matches", "overlap"]

_WHITESPACE = re.compile(r"[ \t\r\n]")
_INVALID_NAME_CHARS = frozenset(">*. /\\\t\r\n")


def is_valid_subject(subject: str) -> bool:
    """What nats-py accepts to publish on: not empty, no whitespace (the server takes tokens as they are)."""
    return bool(subject) and not _WHITESPACE.search(subject)


def is_valid_pattern(pattern: str) -> bool:
    """What nats-py accepts to subscribe to, and the server as a stream or filter subject."""
    if not is_valid_subject(pattern):
        return False
    tokens = pattern.split(".")
    for index, part in enumerate(tokens):
        if not part:
            return False
        if part == ">":
            if index != len(tokens) - 1:
                return False
        elif ">" in part or ("*" in part and part != "*"):
            return False
    return True


def is_valid_name(name: str) -> bool:
    return bool(name) and not any(c in _INVALID_NAME_CHARS for c in name)


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (its tokens taken literally) falls under ``pattern``."""
    want, got = pattern.split("."), subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return len(got) > index
        if index >= len(got) or part not in ("*", got[index]):
            return False
    return len(want) == len(got)


def overlap(a: str, b: str) -> bool:
    """Whether some subject falls under both patterns."""
    left, right = a.split("."), b.split(".")
    for index in range(min(len(left), len(right))):
        x, y = left[index], right[index]
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(left) == len(right)

"""Argo's duration strings (Go ``time.ParseDuration`` plus a bare number of seconds).

Argo accepts ``retryStrategy.backoff.duration: "5s"``, ``"1m30s"``, ``"500ms"`` or ``"10"`` (a
number without a unit means seconds), and integers where the field is an IntOrString.
"""

from __future__ import annotations

import re

from forge.errors import InvalidInputError

__all__ = ["parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: str | float, *, field: str = "duration") -> float:
    """Seconds in an Argo duration; ``InvalidInputError`` naming ``field`` when it is malformed."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{field}: {value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidInputError(f"{field}: {value!r} is negative")
        return float(value)
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    sign = 1.0
    if text[:1] in {"+", "-"}:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise InvalidInputError(f"{field}: {value!r} is not a duration (like '5s', '1m30s', '500ms')")
    total, pos = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise InvalidInputError(f"{field}: {value!r} is not a duration (like '5s', '1m30s', '500ms')")
    if sign < 0 and total > 0:
        raise InvalidInputError(f"{field}: {value!r} is negative")
    return total

"""Which errors are retried, and after how long: one rule for every stamina retry in Forge.

``TransientError`` (and its ``ServiceUnavailableError``) is retried; its ``retry_after``, when the
far side said one (``Retry-After``), replaces the exponential backoff for that attempt. Anything
else is not retried.
"""

from __future__ import annotations

from forge.errors import TransientError

__all__ = ["transient"]


def transient(exc: Exception) -> bool | float:
    """A stamina ``on=`` hook: retry ``TransientError``, waiting its ``retry_after`` when given."""
    if not isinstance(exc, TransientError):
        return False
    return exc.retry_after if exc.retry_after else True

"""Log records of one logger, for tests (Litestar's logging config replaces the root handlers caplog uses)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["log_records"]


@contextmanager
def log_records(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger ``name`` emits inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)

"""The cache's writes (whole files or nothing, never a temporary file left behind) and the reader driver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from forge.cmp.release import _complete, write_atomic


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "entry"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(path.name for path in target.parent.iterdir()) == ["entry"]


def test_a_write_that_cannot_be_renamed_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    target.mkdir()
    (target / "kept").write_bytes(b"x")  # a non-empty directory: the rename fails

    write_atomic(target, b"data")  # skipped: the cache is only an optimisation

    assert sorted(path.name for path in tmp_path.iterdir()) == ["entry"]
    assert (target / "kept").read_bytes() == b"x"


def test_an_unwritable_cache_is_skipped(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    write_atomic(blocker / "below" / "entry", b"data")  # its parent cannot be created
    assert blocker.read_bytes() == b""


def test_a_reader_coroutine_runs_without_an_event_loop_or_is_refused() -> None:
    async def immediate() -> str:
        return "value"

    async def suspending() -> str:
        await asyncio.sleep(0)  # needs a loop: forge-cmp never runs one
        return "value"

    assert _complete(immediate()) == "value"
    with pytest.raises(RuntimeError, match="suspended without an event loop"):
        _complete(suspending())

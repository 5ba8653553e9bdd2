"""The cache's writes: whole files or nothing, never a temporary file left behind."""

from __future__ import annotations

from pathlib import Path

from forge.cmp.release import write_atomic


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

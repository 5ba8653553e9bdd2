"""Pygit2Mirrors.checkout: a commit's tree written from the bare mirror, the mirror untouched."""

from __future__ import annotations

import stat
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode

from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.errors import InvalidInputError, NotFoundError

from .support import make_repo


async def test_checkout_writes_modes_links_and_submodules_without_touching_refs(tmp_path: Path) -> None:
    src = tmp_path / "src.git"
    sha = make_repo(
        src,
        {
            "a/run.sh": (FileMode.BLOB_EXECUTABLE, b"#!/bin/sh\n"),
            "a/plain.txt": (FileMode.BLOB, b"plain"),
            "a/up": (FileMode.LINK, b"../outside"),
            "vendor/sub": (FileMode.COMMIT, b""),
        },
    )
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    await mirrors.sync("acme/mono", str(src))
    mirror = pygit2.Repository(str(mirrors.mirror_path("acme/mono")))
    refs_before = {r: str(mirror.references[r].target) for r in mirror.references}

    dest = tmp_path / "work" / "job"
    await mirrors.checkout("acme/mono", sha, dest)

    assert stat.S_IMODE((dest / "a/run.sh").stat().st_mode) & 0o111
    assert not stat.S_IMODE((dest / "a/plain.txt").stat().st_mode) & 0o111
    assert (dest / "a/plain.txt").read_bytes() == b"plain"
    assert str((dest / "a/up").readlink()) == "../outside"
    assert (dest / "vendor/sub").is_dir()
    assert sorted(p.name for p in dest.iterdir()) == ["a", "vendor"]
    assert {r: str(mirror.references[r].target) for r in mirror.references} == refs_before
    assert not (mirrors.mirror_path("acme/mono") / "index").exists()

    with pytest.raises(InvalidInputError, match="already exists"):
        await mirrors.checkout("acme/mono", sha, dest)
    with pytest.raises(NotFoundError, match="unknown commit"):
        await mirrors.checkout("acme/mono", "0" * 40, tmp_path / "other")
    with pytest.raises(NotFoundError, match="no mirror"):
        await mirrors.checkout("acme/never", sha, tmp_path / "third")

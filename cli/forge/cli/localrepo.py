"""Turn a local path into something workers can clone: a git repository root, or a snapshot.

A path that is the root of a git repository is used as is (its committed history). Any other
directory (say ``examples/monorepo`` inside this repository) is snapshotted into a bare
repository under ``<home>/sources/`` as a new commit on ``main`` whose parent is the previous
snapshot, so the affected set of a re-run is computed against the last run.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pygit2

from forge.errors import InvalidInputError, LimitExceededError, NotFoundError

__all__ = ["LocalSource", "local_source"]

_SKIP_DIRS = {
    ".git",
    ".forge-dev",
    ".venv",
    "__pycache__",
    "node_modules",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}
_MAX_FILES = 200_000


@dataclass(frozen=True, slots=True)
class LocalSource:
    name: str
    clone_url: str
    commit: str
    base: str | None
    branch: str | None


def _repo_name(path: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name).strip("-") or "repo"
    return f"local/{slug}"


def local_source(path: Path, home: Path, *, rev: str | None = None, base: str | None = None) -> LocalSource:
    path = path.resolve()
    if not path.is_dir():
        raise NotFoundError(f"{path}: no such directory")
    found = pygit2.discover_repository(str(path))
    if found is not None:
        repo = pygit2.Repository(found)
        root = Path(repo.workdir).resolve() if repo.workdir else Path(repo.path).resolve()
        if root == path:
            return _from_repo(repo, path, rev, base)
    if rev is not None:
        raise InvalidInputError(f"{path} is not the root of a git repository, so --rev cannot be used")
    return _snapshot(path, home, base)


def _from_repo(repo: pygit2.Repository, path: Path, rev: str | None, base: str | None) -> LocalSource:
    try:
        commit = repo.revparse_single(rev or "HEAD").peel(pygit2.Commit)
        base_commit = repo.revparse_single(base).peel(pygit2.Commit) if base else None
    except (KeyError, pygit2.GitError) as exc:
        raise NotFoundError(f"{path}: unknown revision: {exc}") from None
    base_sha = str(base_commit.id) if base_commit else (str(commit.parent_ids[0]) if commit.parent_ids else None)
    branch = None if repo.head_is_detached or rev else repo.head.shorthand
    return LocalSource(_repo_name(path), str(path), str(commit.id), base_sha, branch)


def _snapshot(path: Path, home: Path, base: str | None) -> LocalSource:
    store = (home / "sources" / f"{_repo_name(path).split('/', 1)[1]}.git").resolve()
    repo = pygit2.Repository(str(store)) if store.exists() else pygit2.init_repository(str(store), bare=True)
    tree = _write_tree(repo, path, [0])
    ref = "refs/heads/main"
    parent = repo.references[ref].peel(pygit2.Commit) if ref in repo.references else None
    if parent is not None and parent.tree_id == tree:
        commit_id, base_sha = parent.id, (str(parent.parent_ids[0]) if parent.parent_ids else None)
    else:
        sig = pygit2.Signature("forge", "forge@localhost", int(time.time()), 0)
        commit_id = repo.create_commit(ref, sig, sig, f"snapshot of {path}", tree, [parent.id] if parent else [])
        base_sha = str(parent.id) if parent else None
    return LocalSource(_repo_name(path), str(store), str(commit_id), base or base_sha, "main")


def _write_tree(repo: pygit2.Repository, directory: Path, count: list[int]) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_symlink():
            builder.insert(
                entry.name, repo.create_blob(str(Path(entry.path).readlink()).encode()), pygit2.GIT_FILEMODE_LINK
            )
        elif entry.is_dir():
            if entry.name in _SKIP_DIRS:
                continue
            sub = _write_tree(repo, Path(entry.path), count)
            if len(repo[sub].peel(pygit2.Tree)):
                builder.insert(entry.name, sub, pygit2.GIT_FILEMODE_TREE)
        elif entry.is_file():
            count[0] += 1
            if count[0] > _MAX_FILES:
                raise LimitExceededError(f"{directory} holds more than {_MAX_FILES} files; commit it to git instead")
            mode = pygit2.GIT_FILEMODE_BLOB_EXECUTABLE if os.access(entry.path, os.X_OK) else pygit2.GIT_FILEMODE_BLOB
            builder.insert(entry.name, repo.create_blob_fromdisk(entry.path), mode)
    return builder.write()

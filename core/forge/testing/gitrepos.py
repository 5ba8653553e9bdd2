"""Build git repositories for tests, benchmarks and e2e runs with pygit2, without a worktree.

``commit_files(path, {"svc/a.txt": "hi", "old.txt": None}, "msg")`` creates the (bare)
repository on first use and commits on top of the branch: a ``str``/``bytes`` value writes a
file, :class:`Symlink` a symbolic link, ``None`` deletes the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

__all__ = ["Content", "Symlink", "commit_files", "open_or_init"]

_SIGNATURE = pygit2.Signature("Forge Tests", "tests@forge.invalid", 1_700_000_000, 0)


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str


Content = str | bytes | Symlink | None


def open_or_init(path: Path, *, bare: bool = True) -> pygit2.Repository:
    """The repository at ``path``, created with ``main`` as its initial branch when missing."""
    if (path / "HEAD").exists() or (path / ".git").exists():
        return pygit2.Repository(str(path))
    return pygit2.init_repository(str(path), bare=bare, initial_head="main")


def commit_files(
    repo_path: Path,
    files: Mapping[str, Content],
    message: str = "change",
    *,
    branch: str = "main",
    parents: Sequence[str] | None = None,
) -> str:
    """Commit ``files`` on ``branch`` (on top of its tip unless ``parents`` is given); the new sha."""
    repo = open_or_init(repo_path)
    ref = f"refs/heads/{branch}"
    if parents is None:
        tip = repo.references.get(ref)
        parent_ids = [str(tip.target)] if tip is not None else []
    else:
        parent_ids = list(parents)
    base_tree = repo[parent_ids[0]].peel(pygit2.Tree) if parent_ids else None
    nested: dict[str, object] = {}
    for path, content in files.items():
        node = nested
        *dirs, leaf = path.strip("/").split("/")
        for name in dirs:
            child = node.setdefault(name, {})
            assert isinstance(child, dict), f"{path}: a parent is also a file"
            node = child
        node[leaf] = content
    tree_id = _write_tree(repo, base_tree, nested)
    oid = repo.create_commit(None, _SIGNATURE, _SIGNATURE, message, tree_id, [pygit2.Oid(hex=p) for p in parent_ids])
    repo.references.create(ref, oid, force=True)
    return str(oid)


def _write_tree(repo: pygit2.Repository, base: pygit2.Tree | None, changes: Mapping[str, object]) -> pygit2.Oid:
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    for name, content in changes.items():
        existing = builder.get(name)
        if isinstance(content, dict):
            is_tree = existing is not None and existing.type_str == "tree"
            sub_base = repo[existing.id].peel(pygit2.Tree) if existing is not None and is_tree else None
            sub_id = _write_tree(repo, sub_base, content)
            if len(repo[sub_id].peel(pygit2.Tree)) == 0:
                if existing is not None:
                    builder.remove(name)
                continue
            builder.insert(name, sub_id, FileMode.TREE)
        elif content is None:
            if existing is not None:
                builder.remove(name)
        elif isinstance(content, Symlink):
            builder.insert(name, repo.create_blob(content.target.encode()), FileMode.LINK)
        else:
            data = content.encode() if isinstance(content, str) else content
            assert isinstance(data, bytes)
            builder.insert(name, repo.create_blob(data), FileMode.BLOB)
    return builder.write()

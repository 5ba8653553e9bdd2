"""Find every ``.forge/project.yaml`` (and the root ``.forge/repo.yaml``) in a git tree.

The walk is post-order and iterative (no recursion limit on deep trees). What it finds under a
tree is remembered by tree id in the :class:`ConfigCache`, so a later commit re-walks only the
trees on the paths to what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from forge.ports.git import EntryKind, GitReader, TreeEntry

if TYPE_CHECKING:
    from forge.discovery.cache import ConfigCache

__all__ = ["FORGE_DIR", "PROJECT_FILE", "REPO_FILE", "FoundFile", "find_config_files"]

FORGE_DIR = ".forge"
PROJECT_FILE = "project.yaml"
REPO_FILE = "repo.yaml"
_NAMES = frozenset({PROJECT_FILE, REPO_FILE})
_TOP_REPO_FILE = f"{FORGE_DIR}/{REPO_FILE}"


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A config file (or a ``.forge`` that is not a directory) at ``path``, relative to the walked tree."""

    path: str
    blob_id: str
    kind: EntryKind

    @property
    def directory(self) -> str:
        """The directory holding ``.forge`` ('.' at the top)."""
        parts = self.path.split("/")
        cut = len(parts) - 1 - parts[::-1].index(FORGE_DIR)
        return "/".join(parts[:cut]) or "."

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


def find_config_files(reader: GitReader, tree_id: str, cache: ConfigCache) -> tuple[FoundFile, ...]:
    """Config files under ``tree_id``, sorted by path; ``repo.yaml`` only at the top of the tree."""
    found: dict[str, tuple[FoundFile, ...]] = {}
    children: dict[str, list[TreeEntry]] = {}
    pending: list[tuple[str, bool]] = [(tree_id, False)]
    while pending:
        current, expanded = pending.pop()
        if current in found:
            continue
        if not expanded:
            hit = cache.tree(current)
            if hit is not None:
                found[current] = hit
                continue
            entries = reader.tree_entries(current)
            children[current] = entries
            pending.append((current, True))
            pending.extend(
                (e.id, False) for e in entries if e.kind is EntryKind.TREE and e.name != FORGE_DIR and e.id not in found
            )
            continue
        result = _compose(reader, children.pop(current), found)
        found[current] = result
        cache.put_tree(current, result)
    return found[tree_id]


def _compose(
    reader: GitReader, entries: list[TreeEntry], found: dict[str, tuple[FoundFile, ...]]
) -> tuple[FoundFile, ...]:
    own: list[FoundFile] = []
    nested: list[FoundFile] = []
    for entry in entries:
        if entry.name == FORGE_DIR:
            if entry.kind is EntryKind.TREE:
                own.extend(
                    FoundFile(f"{FORGE_DIR}/{e.name}", e.id, e.kind)
                    for e in reader.tree_entries(entry.id)
                    if e.name in _NAMES
                )
            elif entry.kind is EntryKind.LINK:
                own.append(FoundFile(FORGE_DIR, entry.id, entry.kind))
        elif entry.kind is EntryKind.TREE:
            prefix = entry.name + "/"
            nested.extend(
                FoundFile(prefix + f.path, f.blob_id, f.kind) for f in found[entry.id] if f.path != _TOP_REPO_FILE
            )
    if not own and not nested:
        return ()
    own.extend(nested)
    own.sort(key=lambda f: f.path)
    return tuple(own)

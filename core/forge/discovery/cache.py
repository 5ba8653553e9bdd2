"""Content-addressed memory of discovery: parsed configs by blob id, config locations by tree id,
built projects by (config blob, directory, repo.yaml blob, branch).

Both keys are git object ids, so an entry is never stale; the cache can be shared by every
repository a process discovers. Both maps are bounded LRU dicts guarded by one lock, so
discoveries running in several threads may share a cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from forge.discovery.load import Loaded
from forge.discovery.walk import FoundFile
from forge.domain.discovery import DiscoveredProject

__all__ = ["CacheStats", "ConfigCache", "LruDict"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruDict(Generic[K, V]):
    """A dict that forgets its least recently used entry past ``maxsize``; not thread-safe."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> list[tuple[K, V]]:
        """Least recently used first."""
        return list(self._data.items())


@dataclass
class CacheStats:
    parses: int = 0
    parse_hits: int = 0
    tree_walks: int = 0
    tree_hits: int = 0


class ConfigCache:
    """Parsed and validated configs by git blob id, config locations by git tree id."""

    def __init__(self, *, max_configs: int = 20_000, max_trees: int = 500_000):
        self.stats = CacheStats()
        self._configs: LruDict[tuple[str, str], Loaded[Any]] = LruDict(max_configs)
        self._trees: LruDict[str, tuple[FoundFile, ...]] = LruDict(max_trees)
        self._projects: LruDict[tuple[str, ...], DiscoveredProject] = LruDict(max_configs)
        self._lock = threading.Lock()

    def config(self, kind: str, blob_id: str) -> Loaded[Any] | None:
        with self._lock:
            value = self._configs.get((kind, blob_id))
            if value is not None:
                self.stats.parse_hits += 1
            return value

    def put_config(self, kind: str, blob_id: str, value: Loaded[Any]) -> None:
        with self._lock:
            self.stats.parses += 1
            self._configs.put((kind, blob_id), value)

    def tree(self, tree_id: str) -> tuple[FoundFile, ...] | None:
        with self._lock:
            value = self._trees.get(tree_id)
            if value is not None:
                self.stats.tree_hits += 1
            return value

    def put_tree(self, tree_id: str, value: tuple[FoundFile, ...]) -> None:
        with self._lock:
            self.stats.tree_walks += 1
            self._trees.put(tree_id, value)

    def project(self, key: tuple[str, ...]) -> DiscoveredProject | None:
        """A built project by (config blob, directory, repo.yaml blob, branch)."""
        with self._lock:
            return self._projects.get(key)

    def put_project(self, key: tuple[str, ...], value: DiscoveredProject) -> None:
        with self._lock:
            self._projects.put(key, value)

    def config_items(self) -> list[tuple[tuple[str, str], Loaded[Any]]]:
        with self._lock:
            return self._configs.items()

    def tree_items(self) -> list[tuple[str, tuple[FoundFile, ...]]]:
        with self._lock:
            return self._trees.items()

    def preload(
        self, configs: list[tuple[tuple[str, str], Loaded[Any]]], trees: list[tuple[str, tuple[FoundFile, ...]]]
    ) -> None:
        """Fill the cache without counting parses or walks (used when loading a saved cache)."""
        with self._lock:
            for key, value in configs:
                self._configs.put(key, value)
            for tree_id, found in trees:
                self._trees.put(tree_id, found)

"""Save a :class:`ConfigCache` to one JSON file and load it back, for short-lived processes.

``forge discover`` starts a new interpreter each time; keeping the content-addressed cache on
disk (parsed configs by blob id, config locations by tree id) spares it re-parsing every YAML
file. Entries are keyed by git object ids, so a saved cache is never stale. A file that is
missing, unreadable or of another format version is ignored (an empty cache); saving writes a
temporary file and renames it, so concurrent processes never read half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from forge.discovery.cache import ConfigCache
from forge.discovery.load import Issue, Loaded
from forge.discovery.walk import FoundFile
from forge.domain.config import ProjectConfig, RepoConfig
from forge.ports.git import EntryKind

__all__ = ["load_cache", "save_cache"]

_VERSION = 2  # 2: typed artifact producers, config lines at every depth
_MODELS: dict[str, type[BaseModel]] = {"ProjectConfig": ProjectConfig, "RepoConfig": RepoConfig}


def save_cache(cache: ConfigCache, path: Path) -> None:
    configs = [
        [kind, blob, value.config.model_dump(mode="json") if value.config is not None else None,
         [[i.line, i.field, i.reason] for i in value.issues], dict(value.lines), value.raw_name]
        for (kind, blob), value in cache.config_items()
    ]  # fmt: skip
    trees = {tree: [[f.path, f.blob_id, f.kind.value] for f in found] for tree, found in cache.tree_items()}
    document = {"version": _VERSION, "configs": configs, "trees": trees}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")
    staging.replace(path)


def load_cache(path: Path, cache: ConfigCache | None = None) -> ConfigCache:
    """``cache`` (or a new one) filled from ``path``; an unusable file leaves it empty."""
    cache = cache if cache is not None else ConfigCache()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, ValidationError):
        document: Any = json.loads(path.read_text(encoding="utf-8"))
        if document.get("version") != _VERSION:
            return cache
        configs = [((kind, blob), _loaded(kind, *rest)) for kind, blob, *rest in document["configs"]]
        trees = [
            (tree, tuple(FoundFile(p, b, EntryKind(k)) for p, b, k in found))
            for tree, found in document["trees"].items()
        ]
        cache.preload(configs, trees)
    return cache


def _loaded(
    kind: str, config: dict[str, Any] | None, issues: list[list[Any]], lines: dict[str, int], raw_name: str | None
) -> Loaded[Any]:
    model = _MODELS[kind]
    return Loaded(
        model.model_validate(config) if config is not None else None,
        tuple(Issue(line, field, reason) for line, field, reason in issues),
        lines,
        raw_name,
    )

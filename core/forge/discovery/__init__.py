"""Discovery: read a commit's tree (no checkout), validate every ``.forge`` config, compute the
affected projects with reasons, the phase groups and the steps per (phase, project) (DESIGN §3).

Runs synchronously against a :class:`~forge.ports.git.GitReader`; async callers wrap the whole
call in ``asyncio.to_thread``.
"""

from __future__ import annotations

from forge.discovery.affected import MAX_LISTED, NO_BASE
from forge.discovery.cache import CacheStats, ConfigCache
from forge.discovery.discover_commit import MAX_CONFIG_BYTES, discover
from forge.discovery.globs import glob_matches

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_LISTED",
    "NO_BASE",
    "CacheStats",
    "ConfigCache",
    "discover",
    "glob_matches",
]

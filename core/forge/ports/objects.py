"""ObjectStore: S3-compatible storage for discovery results, large job results and logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

__all__ = ["ObjectInfo", "ObjectStore"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    content_type: str | None = None


class ObjectStore(Protocol):
    async def ensure_bucket(self) -> None: ...

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Write the whole object (overwrites)."""

    async def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Write the whole object from the file at ``path`` (overwrites), streamed: the file is never held
        in memory whole (a part at a time, as the adapter uploads it). ``NotFoundError`` for no file."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; ``NotFoundError`` when absent."""

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Write the object into the file at ``path`` (created or truncated), streamed, and return what was
        read; ``NotFoundError`` when absent (``path`` is then left as it was)."""

    async def stat(self, key: str) -> ObjectInfo:
        """Metadata; ``NotFoundError`` when absent."""

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``, sorted by key."""

    async def delete(self, key: str) -> None:
        """Remove the object; absent objects are fine."""

    async def presign_get(self, key: str, expires: timedelta) -> str:
        """A URL anyone can GET the object at until ``expires`` passes."""

    async def ping(self) -> None:
        """Raise ``ServiceUnavailableError`` when the store cannot be reached."""

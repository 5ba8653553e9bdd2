"""The resources layer of a Release OCI, read in memory with limits, as Kubernetes objects.

More lenient about layout than ``forge.releases.unpack_resources`` (which reads only what the
release worker writes: one JSON object per ``resources/<name>.yaml``) so that any tar of manifests
renders, and stricter about safety, because these bytes crossed a trust boundary:

- gzip is inflated at most to :data:`MAX_UNPACKED_BYTES` (64 MiB, tar headers included): a gzip
  bomb costs that much memory and no more;
- at most :data:`MAX_ENTRIES` (10,000) tar entries;
- regular files only: symbolic and hard links, devices, FIFOs and sparse files are refused;
  directory entries carry nothing and are skipped; an absolute path, a ``..`` segment or a name
  that appears twice is refused. Nothing is ever written to disk;
- every ``.yaml``/``.yml`` entry is read as multi-document YAML (:mod:`forge.cmp.documents`),
  empty documents dropped; other files are ignored; every object needs string ``apiVersion`` and
  ``kind`` and a ``metadata`` mapping with a string ``name``; no object at all is refused
  (an empty render makes Argo CD prune the app).
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Mapping
from typing import Any

from forge.cmp.documents import load_documents
from forge.errors import InvalidInputError, LimitExceededError

__all__ = ["MAX_ENTRIES", "MAX_UNPACKED_BYTES", "read_objects"]

MAX_ENTRIES = 10_000
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
_WHERE = "resources layer"


def read_objects(
    layer: bytes, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_UNPACKED_BYTES
) -> list[dict[str, Any]]:
    """The objects of a gzipped tar, in archive order; InvalidInputError/LimitExceededError on a refusal."""
    raw = _gunzip(layer, max_bytes)
    objects: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            while (member := archive.next()) is not None:
                if len(seen) >= max_entries:
                    raise LimitExceededError(f"{_WHERE}: more than {max_entries} entries")
                name = _check(member, seen)
                seen.add(name)
                if member.isdir() or not name.endswith((".yaml", ".yml")):
                    continue
                handle = archive.extractfile(member)
                content = handle.read() if handle is not None else b""
                where = f"{_WHERE}: {name}"
                for index, document in enumerate(load_documents(content, where)):
                    objects.append(_object(document, f"{where} (document {index + 1})"))
    except tarfile.TarError as exc:
        raise InvalidInputError(f"{_WHERE}: not a valid tar archive ({exc})") from None
    if not objects:
        raise InvalidInputError(f"{_WHERE}: holds no Kubernetes object; refusing to render an empty release")
    return objects


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        raise InvalidInputError(f"{_WHERE}: not gzip data")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"{_WHERE}: corrupt gzip stream ({exc})") from None
    if len(raw) > max_bytes:
        raise LimitExceededError(f"{_WHERE}: inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise InvalidInputError(f"{_WHERE}: truncated gzip stream")
    return raw


def _check(member: tarfile.TarInfo, seen: set[str]) -> str:
    name = member.name
    where = f"{_WHERE}: entry {name!r}"
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise InvalidInputError(f"{where}: absolute or malformed path")
    if ".." in name.split("/"):
        raise InvalidInputError(f"{where}: path contains '..'")
    refused = [
        (member.issym(), "a symbolic link"),
        (member.islnk(), "a hard link"),
        (member.ischr() or member.isblk(), "a device"),
        (member.isfifo(), "a FIFO"),
        (member.issparse(), "a sparse file"),
    ]
    for matched, what in refused:
        if matched:
            raise InvalidInputError(f"{where}: is {what}; only regular files are allowed")
    if not (member.isreg() or member.isdir()):
        raise InvalidInputError(f"{where}: not a regular file")
    normal = name.removeprefix("./").rstrip("/")
    if normal in seen:
        raise InvalidInputError(f"{where}: appears twice")
    return normal


def _object(document: Any, where: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise InvalidInputError(f"{where}: not a Kubernetes object (a mapping), got {type(document).__name__}")
    for field in ("apiVersion", "kind"):
        if not isinstance(document.get(field), str) or not document[field]:
            raise InvalidInputError(f"{where}: {field}: missing or not a string")
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise InvalidInputError(f"{where}: metadata.name: missing or not a string ({document['kind']})")
    return document

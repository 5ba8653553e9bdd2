"""The resources layer: a deterministic tar.gz of rendered objects, and its strict reader.

A retried release must push the identical digest, so the bytes depend on nothing but the set of
objects: each object is one entry ``resources/<kind>[-<namespace>]-<name>.yaml`` (lower-case,
``[a-z0-9._-]``, ``${{ … }}`` left out, ``-2``, ``-3``… on a clash), entries sorted by name, ustar headers with mtime 0,
uid/gid 0, empty uname/gname, mode 0644, and a gzip header written here (mtime 0, no file name,
OS 255) because ``gzip.compress`` lets zlib pick the OS byte.

Each entry holds one JSON object (sorted keys, two-space indent, trailing newline). JSON is YAML,
so ``kubectl`` and Argo CD read the files, and it is the one YAML layout with a single spelling per
value: a string like ``yes`` or ``1.10`` stays a string for YAML 1.1 and 1.2 readers alike.

The reader takes bytes from a registry, a trust boundary: it reads only what the writer writes
(regular files directly under ``resources/``, JSON objects with string ``apiVersion``, ``kind``
and ``metadata.name``) and refuses everything else with a one-line cause before any caller sees
an object. Decompression stops at ``max_bytes`` (a gzip bomb costs at most that much memory).
"""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from forge.errors import InvalidInputError, LimitExceededError

__all__ = [
    "MAX_COMPRESSED_BYTES",
    "MAX_ENTRIES",
    "MAX_UNPACKED_BYTES",
    "pack_resources",
    "unpack_resources",
]

MAX_COMPRESSED_BYTES = 4 * 1024 * 1024
MAX_UNPACKED_BYTES = 8 * 1024 * 1024
"""Cap on the decompressed tar stream, headers included (the rendered cap is 1 MiB compact JSON)."""
MAX_ENTRIES = 1000
MAX_DEPTH = 64

_PREFIX = "resources/"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_EXPRESSION = re.compile(r"\$?\$\{\{.*?\}\}", re.DOTALL)
_ENTRY = re.compile(r"resources/[a-z0-9][a-z0-9._-]*\.ya?ml")
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_BASE_LIMIT = 80


def pack_resources(objects: Sequence[Mapping[str, Any]]) -> bytes:
    """The tar.gz of ``objects``; the same objects in any order or key order give the same bytes."""
    documents = sorted((_base_name(obj), _document(obj)) for obj in objects)
    names: dict[str, bytes] = {}
    for base, document in documents:
        name, counter = f"{_PREFIX}{base}.yaml", 1
        while name in names:
            counter += 1
            name = f"{_PREFIX}{base}-{counter}.yaml"
        names[name] = document
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(names):
            info = tarfile.TarInfo(name)
            info.size = len(names[name])
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(names[name]))
    return _gzip(buffer.getvalue())


def unpack_resources(
    data: bytes,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_entries: int = MAX_ENTRIES,
    max_compressed: int = MAX_COMPRESSED_BYTES,
    max_entry_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The objects of a resources layer, sorted by (kind, name, namespace, apiVersion).

    ``max_bytes`` caps the decompressed tar stream, ``max_entry_bytes`` (default ``max_bytes``)
    each entry, ``max_compressed`` the layer itself. An empty archive gives ``[]``: refusing to
    print an empty stream is the CMP's rule, not the format's.
    """
    if len(data) > max_compressed:
        raise LimitExceededError(f"resources layer: {len(data)} bytes compressed, over the limit of {max_compressed}")
    raw = _gunzip(data, max_bytes)
    entry_limit = max_bytes if max_entry_bytes is None else max_entry_bytes
    objects: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            while (member := tar.next()) is not None:
                if len(seen) >= max_entries:
                    raise LimitExceededError(f"resources layer: more than {max_entries} entries")
                _check_member(member, seen, entry_limit)
                seen.add(member.name)
                handle = tar.extractfile(member)
                content = handle.read() if handle is not None else b""
                objects.append(_parse_entry(member.name, content))
    except tarfile.TarError as exc:
        raise InvalidInputError(f"resources layer: not a valid tar archive: {exc}") from None
    return sorted(objects, key=_sort_key)


def _document(obj: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"resources layer: an object is not representable as JSON: {exc}") from None
    return (text + "\n").encode("utf-8")


def _base_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    parts = [str(obj.get("kind", "")), str(metadata.get("namespace") or ""), str(metadata.get("name", ""))]
    safe = [_UNSAFE.sub("-", _EXPRESSION.sub("", p).lower()).strip("-.") for p in parts]
    base = "-".join(p for p in safe if p)[:_BASE_LIMIT].strip("-.")
    return base or "object"


def _gzip(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(payload) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)
    return _GZIP_HEADER + body + trailer


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        raise InvalidInputError("resources layer: not gzip data")
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = decompressor.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"resources layer: corrupt gzip stream: {exc}") from None
    if len(raw) > max_bytes:
        raise LimitExceededError(f"resources layer: decompresses to more than {max_bytes} bytes")
    if not decompressor.eof:
        raise InvalidInputError("resources layer: truncated gzip stream")
    if decompressor.unused_data:
        raise InvalidInputError("resources layer: data after the end of the gzip stream")
    return raw


def _check_member(member: tarfile.TarInfo, seen: set[str], entry_limit: int) -> None:
    name = member.name
    where = f"resources layer: entry {name!r}"
    if name.startswith("/"):
        raise InvalidInputError(f"{where}: absolute path")
    if ".." in name.split("/"):
        raise InvalidInputError(f"{where}: path contains '..'")
    kinds = [
        (member.issym(), "symbolic link"),
        (member.islnk(), "hard link"),
        (member.ischr() or member.isblk(), "device"),
        (member.isfifo(), "FIFO"),
        (member.isdir(), "directory"),
    ]
    for matched, what in kinds:
        if matched:
            raise InvalidInputError(f"{where}: is a {what}; only regular files are allowed")
    if not member.isreg():
        raise InvalidInputError(f"{where}: not a regular file")
    if not _ENTRY.fullmatch(name):
        raise InvalidInputError(f"{where}: entries are resources/<name>.yaml with [a-z0-9._-] names")
    if name in seen:
        raise InvalidInputError(f"{where}: appears twice")
    if member.size > entry_limit:
        raise LimitExceededError(f"{where}: {member.size} bytes, over the limit of {entry_limit}")


def _parse_entry(name: str, content: bytes) -> dict[str, Any]:
    where = f"resources layer: entry {name!r}"
    try:
        document = json.loads(content.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where}: not one JSON object: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidInputError(f"{where}: {reason}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{where}: must hold one mapping, got {type(document).__name__}")
    if _depth(document) > MAX_DEPTH:
        raise InvalidInputError(f"{where}: nests deeper than {MAX_DEPTH} levels")
    for field in ("apiVersion", "kind"):
        if not isinstance(document.get(field), str) or not document[field]:
            raise InvalidInputError(f"{where}: {field}: missing or not a string")
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise InvalidInputError(f"{where}: metadata.name: missing or not a string")
    if not isinstance(metadata.get("namespace", ""), str):
        raise InvalidInputError(f"{where}: metadata.namespace: not a string")
    return document


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _depth(node: Any) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        if isinstance(current, dict):
            stack.extend((v, depth + 1) for v in current.values())
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current)
    return deepest


def _sort_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj["metadata"]
    return obj["kind"], metadata["name"], metadata.get("namespace", ""), obj["apiVersion"]

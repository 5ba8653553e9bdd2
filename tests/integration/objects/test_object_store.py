"""ObjectStore compliance suite: the contract of ``forge.ports.objects``, run against every adapter."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from forge.errors import (
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
)
from forge.ports.objects import ObjectStore

if TYPE_CHECKING:  # the fixtures' types; conftest is never imported at run time
    from tests.integration.objects.conftest import AdapterHarness

BINARY = bytes(range(256)) * 64


async def test_ensure_bucket_is_idempotent(store: ObjectStore) -> None:
    await store.ensure_bucket()
    await store.ensure_bucket()
    await store.put("k", b"v")
    await store.ensure_bucket()
    assert await store.get("k") == b"v"


async def test_concurrent_ensure_bucket_on_a_new_bucket(harness: AdapterHarness, bucket: str) -> None:
    async with harness.open(bucket) as fresh:
        await asyncio.gather(*(fresh.ensure_bucket() for _ in range(4)))
        await fresh.put("k", b"v")
        assert await fresh.get("k") == b"v"


async def test_put_get_stat_round_trip(store: ObjectStore) -> None:
    written = await store.put("runs/1/result.bin", BINARY, content_type="application/x-forge")
    assert written.key == "runs/1/result.bin"
    assert written.size == len(BINARY)
    assert written.etag

    assert await store.get("runs/1/result.bin") == BINARY
    info = await store.stat("runs/1/result.bin")
    assert info.key == "runs/1/result.bin"
    assert info.size == len(BINARY)
    assert info.etag == written.etag
    assert info.content_type == "application/x-forge"
    assert info.last_modified is not None
    assert info.last_modified.tzinfo is not None


async def test_empty_object(store: ObjectStore) -> None:
    assert (await store.put("empty", b"")).size == 0
    assert await store.get("empty") == b""
    assert (await store.stat("empty")).size == 0


async def test_large_object_round_trip(store: ObjectStore) -> None:
    data = os.urandom(6 * 1024 * 1024)
    written = await store.put("big/blob", data)
    assert written.size == len(data)
    assert await store.get("big/blob") == data
    assert (await store.stat("big/blob")).size == len(data)


@pytest.mark.parametrize("size", [0, 1000, 5 * 2**20 + 1, 13 * 2**20 + 7])
async def test_put_file_and_get_file_round_trip(store: ObjectStore, tmp_path: Path, size: int) -> None:
    """Streamed both ways, below, at and past a part's size (a multipart upload with a short last part)."""
    source = tmp_path / "source"
    data = os.urandom(size)
    source.write_bytes(data)
    written = await store.put_file("logs/big.log", source, content_type="text/plain")
    assert (written.key, written.size) == ("logs/big.log", size)
    info = await store.stat("logs/big.log")
    assert (info.size, info.content_type) == (size, "text/plain")
    assert written.etag  # not compared with stat's: rclone answers a multipart object's stat with its MD5
    assert info.etag
    target = tmp_path / "target"
    target.write_bytes(b"older and longer content" * 100)  # truncated, not overwritten in place
    read = await store.get_file("logs/big.log", target)
    assert read.size == size
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


async def test_put_file_overwrites_and_get_file_of_a_missing_key_is_not_found(
    store: ObjectStore, tmp_path: Path
) -> None:
    await store.put("k", b"old")
    source = tmp_path / "new"
    source.write_bytes(b"new")
    await store.put_file("k", source)
    assert await store.get("k") == b"new"
    untouched = tmp_path / "untouched"
    untouched.write_bytes(b"keep")
    with pytest.raises(NotFoundError):
        await store.get_file("missing", untouched)
    assert untouched.read_bytes() == b"keep"
    with pytest.raises(NotFoundError):
        await store.put_file("k2", tmp_path / "no-such-file")
    with pytest.raises(InvalidInputError):
        await store.put_file("../escape", source)


async def test_put_file_holds_a_part_at_a_time_not_the_file(store: ObjectStore, tmp_path: Path) -> None:
    """A 64 MiB file is uploaded with a few MiB of Python memory at most (tracemalloc's peak)."""
    source = tmp_path / "64mib"
    with source.open("wb") as out:
        for _ in range(64):
            out.write(os.urandom(2**20))
    tracemalloc.start()
    try:
        await store.put_file("logs/64mib.log", source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (await store.stat("logs/64mib.log")).size == 64 * 2**20
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"


async def test_unicode_and_spaces_in_keys(store: ObjectStore) -> None:
    key = "logs/run 7/schritt-ü/文件.txt"
    await store.put(key, b"hello")
    assert await store.get(key) == b"hello"
    assert [info.key for info in await store.list("logs/run 7/")] == [key]


async def test_overwrite_replaces_the_object(store: ObjectStore) -> None:
    first = await store.put("k", b"first version")
    second = await store.put("k", b"second")
    assert await store.get("k") == b"second"
    info = await store.stat("k")
    assert info.size == len(b"second")
    assert info.etag == second.etag != first.etag


@pytest.mark.parametrize("op", ["get", "stat"])
async def test_missing_key_is_not_found(store: ObjectStore, op: str) -> None:
    with pytest.raises(NotFoundError, match="no/such/key"):
        await getattr(store, op)("no/such/key")


async def test_list_by_prefix_is_sorted_and_excludes_other_prefixes(store: ObjectStore) -> None:
    for key in ["logs/b", "logs/c/d", "logs2/x", "other/logs/y", "logs/a", "log"]:
        await store.put(key, key.encode())

    listed = await store.list("logs/")
    assert [info.key for info in listed] == ["logs/a", "logs/b", "logs/c/d"]
    assert [info.size for info in listed] == [6, 6, 8]
    assert all(info.etag for info in listed)

    assert [info.key for info in await store.list("logs")] == ["logs/a", "logs/b", "logs/c/d", "logs2/x"]
    assert [info.key for info in await store.list("logs/c/")] == ["logs/c/d"]
    assert await store.list("nothing/") == []
    everything = [info.key for info in await store.list("")]
    assert everything == sorted(everything)
    assert len(everything) == 6


async def test_list_many_objects(store: ObjectStore) -> None:
    keys = [f"many/{i:03d}" for i in range(40)]
    await asyncio.gather(*(store.put(key, b"x") for key in reversed(keys)))
    assert [info.key for info in await store.list("many/")] == keys


async def test_delete(store: ObjectStore) -> None:
    await store.put("gone/soon", b"x")
    await store.put("gone/stays", b"y")
    await store.delete("gone/soon")
    with pytest.raises(NotFoundError):
        await store.get("gone/soon")
    with pytest.raises(NotFoundError):
        await store.stat("gone/soon")
    assert [info.key for info in await store.list("gone/")] == ["gone/stays"]


async def test_delete_missing_is_fine(store: ObjectStore) -> None:
    await store.delete("never/was")
    await store.put("twice", b"x")
    await store.delete("twice")
    await store.delete("twice")


async def test_presigned_get_serves_the_bytes(store: ObjectStore) -> None:
    await store.put("shared/report.bin", BINARY)
    url = await store.presign_get("shared/report.bin", timedelta(minutes=5))
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == BINARY

        assert (await client.get(_tamper_signature(url))).status_code == 403


def _tamper_signature(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_wrong_secret_is_a_permanent_error(harness: AdapterHarness, store: ObjectStore, bucket: str) -> None:
    await store.put("k", b"v")
    async with harness.open_wrong_secret(bucket) as refused:
        with pytest.raises(PermanentError):
            await refused.ping()
        with pytest.raises(PermanentError):
            await refused.put("k2", b"v")
        with pytest.raises(PermanentError) as raised:
            await refused.get("k")
        assert not isinstance(raised.value, NotFoundError)


async def test_unreachable_store_is_unavailable(harness: AdapterHarness, bucket: str) -> None:
    async with harness.open_unreachable(bucket) as down:
        with pytest.raises(ServiceUnavailableError):
            await down.ping()
        with pytest.raises(ServiceUnavailableError):
            await down.get("k")


async def test_ping_a_live_store(store: ObjectStore) -> None:
    await store.ping()


BAD_KEYS = ["", "/abs", "..", "a/../b", "a/..", "./a", "a//b", "a/", "nul\x00byte", "x" * 1025]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidInputError):
        await store.put(key, b"x")
    with pytest.raises(InvalidInputError):
        await store.get(key)
    with pytest.raises(InvalidInputError):
        await store.stat(key)
    with pytest.raises(InvalidInputError):
        await store.delete(key)
    with pytest.raises(InvalidInputError):
        await store.presign_get(key, timedelta(minutes=1))


@pytest.mark.parametrize("prefix", ["/logs/", "../", "a/../b/", "a//"])
async def test_invalid_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidInputError):
        await store.list(prefix)

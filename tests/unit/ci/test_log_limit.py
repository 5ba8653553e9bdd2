"""The log cap of ``LogWriter``: the write that crosses it is cut there, one marker line, nothing after."""

from __future__ import annotations

from datetime import timedelta

from forge.logs import LogWriter
from forge.ports import ObjectInfo


class _Objects:
    """Just what ``LogWriter`` uses of an ``ObjectStore``."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        self.objects[key] = bytes(data)
        return ObjectInfo(key=key, size=len(data), etag="", last_modified=None, content_type=content_type)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        raise NotImplementedError


async def test_output_past_the_limit_is_dropped_after_one_marker_line() -> None:
    objects = _Objects()
    writer = LogWriter(objects, "log", interval=3600, chunk_bytes=10, limit=25)  # type: ignore[arg-type]
    for _ in range(10):
        await writer.write(b"0123456789")
    await writer.close()
    log = objects.objects["log"]
    assert log.startswith(b"0123456789" * 2 + b"01234\nforge: the log reached its limit of 25 bytes;")
    assert log.count(b"forge: the log reached its limit") == 1
    assert log.endswith(b"is dropped\n")
    assert writer.full
    assert writer.dropped == 75
    assert list(objects.objects) == ["log"]  # the chunks were deleted


async def test_a_write_that_ends_exactly_at_the_limit_is_kept_whole_and_the_next_is_marked() -> None:
    objects = _Objects()
    writer = LogWriter(objects, "log", interval=3600, limit=4)  # type: ignore[arg-type]
    await writer.write(b"abcd")
    assert not writer.full
    await writer.write(b"e")
    await writer.write(b"f")
    await writer.close()
    assert objects.objects["log"].startswith(b"abcd\nforge: the log reached its limit")
    assert writer.dropped == 2


async def test_without_a_limit_everything_is_kept() -> None:
    objects = _Objects()
    writer = LogWriter(objects, "log", interval=3600)  # type: ignore[arg-type]
    await writer.write(b"x" * 100_000)
    await writer.close()
    assert objects.objects["log"] == b"x" * 100_000
    assert not writer.full

"""``LogWriter``: the log cap (the write that crosses it is cut there, one marker line, nothing after), the
spool file the whole log is uploaded from, and a retried attempt starting from the earlier log."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from forge.errors import NotFoundError
from forge.logs import LogWriter
from forge.ports import ObjectInfo


class _Objects:
    """Just what ``LogWriter`` uses of an ``ObjectStore``."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        self.objects[key] = bytes(data)
        return ObjectInfo(key=key, size=len(data), etag="", last_modified=None, content_type=content_type)

    async def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        return await self.put(key, path.read_bytes(), content_type=content_type)

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        if key not in self.objects:
            raise NotFoundError(f"object {key!r} not found")
        path.write_bytes(self.objects[key])
        return ObjectInfo(key=key, size=len(self.objects[key]), etag="", last_modified=None)

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


async def test_the_log_is_spooled_to_a_file_and_the_file_is_removed(tmp_path: Path) -> None:
    objects = _Objects()
    writer = LogWriter(objects, "log", interval=3600, chunk_bytes=10, spool_dir=tmp_path)  # type: ignore[arg-type]
    for _ in range(5):
        await writer.write(b"0123456789")
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [50]  # the uploaded chunks, in the spool file
    await writer.close()
    assert objects.objects == {"log": b"0123456789" * 5}
    assert list(tmp_path.iterdir()) == []
    abandoned = LogWriter(objects, "other", interval=3600, chunk_bytes=1, spool_dir=tmp_path)  # type: ignore[arg-type]
    await abandoned.write(b"x")
    await abandoned.release()  # a cancelled step's writer
    assert list(tmp_path.iterdir()) == []


async def test_a_retried_step_starts_from_the_earlier_attempts_log(tmp_path: Path) -> None:
    objects = _Objects()
    objects.objects["log"] = b"attempt 1\n"
    writer = LogWriter(objects, "log", interval=3600, limit=4, spool_dir=tmp_path)  # type: ignore[arg-type]
    assert await writer.start_from("log") == 10
    await writer.flush()  # the earlier log becomes the first chunk: a reader sees it while the attempt runs
    assert objects.objects["log.parts/0000000000"] == b"attempt 1\n"
    await writer.write(b"two\n")  # the limit counts this attempt's bytes only
    assert not writer.full
    await writer.close()
    assert objects.objects == {"log": b"attempt 1\ntwo\n"}
    fresh = LogWriter(objects, "none", interval=3600, spool_dir=tmp_path)  # type: ignore[arg-type]
    assert await fresh.start_from("none") == 0
    assert list(tmp_path.iterdir()) == []

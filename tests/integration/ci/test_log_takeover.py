"""Log generations on the real S3 store: a writer that takes a log over never loses it nor shows it
shorter, and a log whose writer died after a checkpoint is sealed from it (``forge.logs``)."""

from __future__ import annotations

from forge.logs import LogReader, LogWriter, StoredLog, seal
from forge.logs.reader import part_key
from forge.ports import ObjectStore

KEY = "pipeline-runs/r/logs/test/svc/unit.log"
MARK = b"forge: delivery 2 runs it again\n"


async def test_a_take_over_keeps_the_dead_writer_s_chunks_then_the_marker_and_only_grows(
    objects: ObjectStore,
) -> None:
    reader = LogReader(objects)
    dead = LogWriter(objects, KEY, interval=3600)
    await dead.write(b"one\n")
    await dead.flush()
    await dead.write(b"two (no newline)")
    await dead.flush()
    await dead.release()  # its worker died: chunks only
    seen, complete = await reader.read(KEY)
    assert (seen, complete) == (b"one\ntwo (no newline)", False)

    stored = await StoredLog.look(objects, KEY)
    assert stored.next_generation == 1
    taker = LogWriter(objects, KEY, interval=3600, generation=1)
    assert await taker.take_over(stored, marker=MARK) == len(seen)
    now, _ = await reader.read(KEY)
    assert now == seen + b"\n" + MARK  # the boundary on a line of its own, uploaded before the old chunks went
    assert [info.key for info in await objects.list(f"{KEY}.parts/")] == [part_key(KEY, 1, 0)]
    await taker.write(b"three\n")
    await taker.close()
    final, complete = await reader.read(KEY)
    assert complete
    assert final == b"one\ntwo (no newline)\n" + MARK + b"three\n"
    assert await objects.list(f"{KEY}.parts/") == []


async def test_a_take_over_prefers_the_longer_of_the_whole_log_and_the_newest_chunks(objects: ObjectStore) -> None:
    """A dead taker uploaded its first chunk (the whole log and more) but did not delete the whole log yet."""
    await objects.put(KEY, b"attempt 1\n")
    await objects.put(part_key(KEY, 1, 0), b"attempt 1\nattempt 2 partial\n")
    await objects.put(part_key(KEY, 0, 3), b"stale chunk of an older generation\n")
    stored = await StoredLog.look(objects, KEY)
    assert stored.next_generation == 2
    taker = LogWriter(objects, KEY, interval=3600, generation=2)
    await taker.take_over(stored)
    await taker.close()
    assert await objects.get(KEY) == b"attempt 1\nattempt 2 partial\n"
    assert await objects.list(f"{KEY}.parts/") == []


async def test_a_log_is_sealed_from_its_checkpoint_once(objects: ObjectStore) -> None:
    dead = LogWriter(objects, KEY, interval=3600)
    await dead.write(b"uploaded\n")
    await dead.flush()
    await dead.write(b"tail\n")
    checkpoint = await dead.checkpoint()
    assert (checkpoint.generation, checkpoint.parts, checkpoint.tail) == (0, 1, b"tail\n")
    await dead.release()  # died before its close
    await seal(objects, KEY, checkpoint)
    assert await objects.get(KEY) == b"uploaded\ntail\n"
    assert await objects.list(f"{KEY}.parts/") == []
    await seal(objects, KEY, checkpoint)  # a second redelivery: nothing changes
    assert await objects.get(KEY) == b"uploaded\ntail\n"


async def test_a_long_tail_is_uploaded_by_the_checkpoint(objects: ObjectStore) -> None:
    writer = LogWriter(objects, KEY, interval=3600)
    await writer.write(b"x" * 100)
    checkpoint = await writer.checkpoint(inline=10)
    assert (checkpoint.parts, checkpoint.tail) == (1, b"")
    await writer.release()
    await seal(objects, KEY, checkpoint)
    assert await objects.get(KEY) == b"x" * 100


async def test_a_seal_keeps_the_whole_log_its_writer_closed_and_drops_leftover_chunks(objects: ObjectStore) -> None:
    """The writer died inside ``close``: the whole log was written, some chunks not yet deleted."""
    writer = LogWriter(objects, KEY, interval=3600)
    await writer.write(b"a\n")
    await writer.flush()
    await writer.write(b"b\n")
    await writer.flush()
    checkpoint = await writer.checkpoint()
    await objects.put(KEY, b"a\nb\n")  # what close writes first
    await objects.delete(part_key(KEY, 0, 0))  # then it deletes the chunks in order, and died
    await writer.release()
    assert await LogReader(objects).read(KEY) == (b"a\nb\n", True)
    await seal(objects, KEY, checkpoint)
    assert await objects.get(KEY) == b"a\nb\n"
    assert await objects.list(f"{KEY}.parts/") == []

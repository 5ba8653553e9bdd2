"""The reaper zygote: one ``reaper.py --zygote`` per worker process forks every step's reaper.

Steps run through ``execute`` as real processes (no NATS, no S3): what the zygote guarantees is
about processes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import pytest

from forge.workflows.workers import zygote
from forge.workflows.workers.executors import StepOutcome, StepProcess, execute

from .support import alive, read_pid

pytestmark = pytest.mark.skipif(not zygote._REAPER.is_file() or os.uname().sysname != "Linux", reason="Linux only")

ENV = {"PATH": os.defpath, "LANG": "C.UTF-8"}


def _step(script: str, cwd: Path, *, timeout: float = 60, **env: str) -> StepProcess:
    return StepProcess(argv=["/bin/sh", "-c", script], cwd=cwd, env={**ENV, **env}, timeout=timeout)


async def _run(step: StepProcess) -> tuple[StepOutcome, bytes]:
    output = bytearray()

    async def sink(data: bytes) -> None:
        output.extend(data)

    outcome = await execute(step, sink, kill_grace=1.0)
    return outcome, bytes(output)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_one_zygote_forks_the_reaper_of_every_step(tmp_path: Path) -> None:
    script = 'echo "$PPID $(cut -d" " -f4 /proc/$PPID/stat) $(cut -d" " -f5 /proc/$PPID/stat)"'
    seen = []
    for _ in range(20):
        outcome, output = await _run(_step(script, tmp_path))
        assert outcome.success, (outcome, output)
        reaper, reaper_parent, reaper_group = (int(word) for word in output.split())
        seen.append((reaper, reaper_parent, reaper_group))
    current = zygote.current()
    assert current is not None
    assert current.pid is not None
    assert {parent for _, parent, _ in seen} == {current.pid}  # 20 steps, one zygote
    assert _parent(current.pid) == os.getpid()  # the worker's child: it dies with the worker
    assert len({reaper for reaper, _, _ in seen}) == len(seen)  # a reaper per step
    assert all(reaper == group for reaper, _, group in seen)  # each reaper leads the step's group


async def test_a_killed_zygote_takes_the_step_s_tree_with_it_and_the_next_step_starts_another(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'sleep 300 & echo $! > "$OUT/child"; setsid sleep 300 & echo $! > "$OUT/escapee"; echo $$ > "$OUT/main"; wait'
    )
    outcome, _ = await _run(_step("true", tmp_path))  # the zygote is up
    assert outcome.success
    first = zygote.current()
    assert first is not None
    assert first.pid is not None
    pids: list[int] = []
    running = asyncio.ensure_future(_run(_step(script, tmp_path, OUT=str(out))))
    try:
        async with asyncio.timeout(30):
            while not all(
                (out / name).is_file() and (out / name).read_text().strip() for name in ("main", "child", "escapee")
            ):
                await asyncio.sleep(0.02)
        pids = [read_pid(out / name) for name in ("main", "child", "escapee")]
        assert all(alive(pid) for pid in pids)
        os.kill(first.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            outcome, output = await running
        assert outcome.exit_code == 128 + signal.SIGKILL, (outcome, output)
        async with asyncio.timeout(5):
            while any(alive(pid) for pid in pids):
                await asyncio.sleep(0.02)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    outcome, output = await _run(_step("echo again", tmp_path))
    assert outcome.success, (outcome, output)
    assert output == b"again\n"
    second = zygote.current()
    assert second is not None
    assert second.pid not in (None, first.pid)


async def test_concurrent_steps_get_their_own_output(tmp_path: Path) -> None:
    script = 'i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo "$NAME out $i"; echo "$NAME err $i" >&2; done; exit $CODE'
    names = [f"step{n}" for n in range(8)]
    results = await asyncio.gather(
        *(_run(_step(script, tmp_path, NAME=name, CODE=str(n))) for n, name in enumerate(names))
    )
    for n, (name, (outcome, output)) in enumerate(zip(names, results, strict=True)):
        assert outcome.exit_code == n
        lines = output.decode().splitlines()
        body = [line for line in lines if line and not line.startswith("forge:")]
        assert sorted(body) == sorted(f"{name} {stream} {i}" for i in range(1, 401) for stream in ("out", "err"))
        assert [line for line in body if line.startswith(f"{name} out ")] == [f"{name} out {i}" for i in range(1, 401)]


async def test_without_a_zygote_each_step_starts_its_own_reaper_and_it_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refusing = tmp_path / "refusing.py"  # a zygote whose prctl is refused
    refusing.write_text(
        "import marshal, socket, sys\n"
        "sock = socket.socket(fileno=int(sys.argv[2]))\n"
        'data = marshal.dumps({"error": "prctl failed: Operation not permitted"})\n'
        'sock.sendall(len(data).to_bytes(4, "big") + data)\n'
        "sys.exit(125)\n"
    )
    monkeypatch.setattr(zygote, "_REAPER", refusing)
    monkeypatch.setattr(zygote, "_current", None)
    monkeypatch.setattr(zygote, "_unavailable", None)
    with caplog.at_level(logging.WARNING, logger=zygote.__name__):
        for _ in range(2):
            outcome, output = await _run(_step('echo "$PPID $(cut -d" " -f4 /proc/$PPID/stat)"', tmp_path))
            assert outcome.success, (outcome, output)
            reaper, reaper_parent = (int(word) for word in output.split())
            assert reaper_parent == os.getpid()  # a reaper started by the worker itself
            assert reaper != os.getpid()
    warnings = [record for record in caplog.records if "zygote unavailable" in record.getMessage()]
    assert len(warnings) == 1
    assert "Operation not permitted" in warnings[0].getMessage()

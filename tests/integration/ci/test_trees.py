"""Shared commit trees: written once per commit, copied privately per step, evicted LRU, never in use."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from forge.adapters.nats_bus import NatsBus
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.jobs.dispatch import dispatch
from forge.settings import CiSettings
from forge.workflows.workers.sandbox import hand_over
from forge.workflows.workers.trees import TreeCache, private_copy

from .conftest import StartWorker
from .support import CountingMirrors, ci_job, standard_repo


async def test_steps_of_one_commit_share_one_tree_and_cannot_change_it(
    tmp_path: Path, ci_settings: CiSettings, start_worker: StartWorker, bus: NatsBus
) -> None:
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    out = tmp_path / "out"
    out.mkdir()
    mirrors = CountingMirrors(Pygit2Mirrors(tmp_path / "cache"), delay=0.3)  # both jobs wait for one write
    writer = (
        'echo changed > data.txt; rm tool.sh; chmod 000 .; echo mine > "$OUT/../owned-by-a" 2>/dev/null;'
        ' touch "$OUT/a-done"; while [ ! -f "$OUT/b-done" ]; do sleep 0.05; done; chmod 755 .'
    )
    reader = (
        'while [ ! -f "$OUT/a-done" ]; do sleep 0.05; done; cat data.txt > "$OUT/b-data"; ls -A > "$OUT/b-ls";'
        ' readlink link > "$OUT/b-link"; touch "$OUT/b-done"'
    )
    a = ci_job(str(src), sha, writer, step="a", env={"OUT": str(out)})
    b = ci_job(str(src), sha, reader, step="b", env={"OUT": str(out)}, run_id=a.run_id)
    async with start_worker(mirrors=mirrors), asyncio.TaskGroup() as tasks:
        first = tasks.create_task(dispatch(bus, a, timeout=60))
        second = tasks.create_task(dispatch(bus, b, timeout=60))
    assert first.result().success, first.result().error
    assert second.result().success, second.result().error
    assert mirrors.checkouts == [sha]  # one write out of the mirror for both steps
    assert (out / "b-data").read_text() == "payload\n"
    assert (out / "b-ls").read_text().split() == ["data.txt", "link", "tool.sh"]
    assert (out / "b-link").read_text() == "data.txt\n"
    tree = ci_settings.work_dir.resolve() / "trees" / f"{sha}@acme+mono"
    assert (tree / "svc" / "data.txt").read_text() == "payload\n"
    assert (tree / "svc" / "tool.sh").is_file()
    assert (tree / "svc" / "link").is_symlink()
    assert sorted(p.name for p in ci_settings.work_dir.iterdir()) == ["trees"]  # private copies removed

    again = ci_job(str(src), sha, 'cat data.txt > "$OUT/again"', step="c", env={"OUT": str(out)})
    async with start_worker(mirrors=mirrors):  # a new worker process on the same work dir
        assert (await dispatch(bus, again, timeout=60)).success
    assert mirrors.checkouts == [sha]
    assert (out / "again").read_text() == "payload\n"


def _writer(calls: list[str]) -> Callable[[Path], Awaitable[None]]:
    async def materialise(dest: Path) -> None:
        calls.append(dest.name)
        await asyncio.sleep(0.2)
        dest.mkdir()
        (dest / "file").write_text("content")

    return materialise


async def test_two_caches_on_one_root_write_a_tree_once_and_never_show_half(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    root.mkdir()
    (root / ".tmp-t-dead0000").mkdir()  # a writer that died mid-write
    calls: list[str] = []
    materialise = _writer(calls)
    seen: list[str] = []

    async def job(cache: TreeCache) -> None:
        async with cache.use("t", materialise) as tree:
            seen.append((tree / "file").read_text())

    # two instances stand for two worker processes: their flocks are separate open files
    await asyncio.gather(job(TreeCache(root, keep=8)), job(TreeCache(root, keep=8)), job(TreeCache(root, keep=8)))
    assert len(calls) == 1
    assert seen == ["content"] * 3
    assert sorted(p.name for p in root.iterdir()) == ["t", "t.lock"]


async def test_eviction_keeps_the_most_recently_used_and_never_a_tree_in_use(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    cache = TreeCache(root, keep=2)
    calls: list[str] = []
    materialise = _writer(calls)
    for name in ("a", "b", "c"):
        async with cache.use(name, materialise):
            pass
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["b", "c"]
    assert not (root / "a.lock").exists()
    async with cache.use("b", materialise):
        pass  # b is now the most recent: c goes next
    async with cache.use("held", materialise) as held:
        for name in ("d", "e"):
            async with cache.use(name, materialise):
                pass
        assert held.is_dir()
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["d", "e", "held"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["d", "e"]  # held was the oldest unused one


async def test_a_tree_another_process_uses_is_not_evicted(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    cache = TreeCache(root, keep=0)
    calls: list[str] = []
    hold = (
        "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_SH)\n"
        "print('held', flush=True)\ntime.sleep(60)"
    )
    async with cache.use("busy", _writer(calls)):
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", hold, str(root / "busy.lock"), stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
    try:  # our use ended (and evicted nothing); the other process still uses it
        assert cache.evict() == []
        assert (root / "busy").is_dir()
    finally:
        holder.kill()
        await holder.wait()
    assert cache.evict() == ["busy"]
    assert list(root.iterdir()) == []


async def test_a_project_path_cannot_reach_the_shared_trees(
    tmp_path: Path, start_worker: StartWorker, bus: NatsBus
) -> None:
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    job = ci_job(str(src), sha, "echo escaped > data.txt", project_path=f"../trees/{sha}@acme+mono/svc")
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert not result.success
    assert result.error is not None
    assert "is not a directory" in result.error.message
    assert (tmp_path / "work" / "trees" / f"{sha}@acme+mono" / "svc" / "data.txt").read_text() == "payload\n"


async def test_a_private_copy_is_handed_to_its_run_s_uid_in_the_copy_and_refuses_other_runs(tmp_path: Path) -> None:
    """The sandbox's hand-over runs in the copy's thread (issue 7): every entry of the copy is the run's, the copy
    is private to it (``0700``), another run's uid can neither list nor read it, and the shared tree stays as it was."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data.txt").write_text("run a's data\n")
    (tree / "link").symlink_to("sub/data.txt")
    work = Path(tempfile.mkdtemp(prefix="forge-handover-"))  # /tmp: parents traversable by any uid
    work.chmod(0o711)
    try:
        mine, theirs = 1_000_000_001, 1_000_000_002
        copy = work / "job"
        await private_copy(tree, copy, functools.partial(hand_over, uid=mine))
        entries = [copy, *copy.rglob("*")]
        assert {entry.lstat().st_uid for entry in entries} == {mine}
        assert {entry.lstat().st_gid for entry in entries} == {mine}
        assert copy.stat().st_mode & 0o777 == 0o700
        assert {entry.lstat().st_uid for entry in [tree, *tree.rglob("*")]} == {os.getuid()}
        probe = f"ls {copy}; cat {copy}/sub/data.txt {copy}/link; echo end"
        for uid, readable in ((theirs, False), (mine, True)):
            done = subprocess.run(
                ["/bin/sh", "-c", probe], user=uid, group=uid, extra_groups=[], capture_output=True, check=False
            )
            assert done.stdout.endswith(b"end\n")
            assert (b"run a's data" in done.stdout) is readable, done
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Pygit2Mirrors against a real ``git daemon`` and local paths."""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
from pathlib import Path

import pygit2
import pytest

from forge.adapters.pygit2_git import Pygit2Mirrors, Pygit2Reader
from forge.discovery import discover
from forge.embedded.process import ServiceProcess, free_port
from forge.errors import NotFoundError, ServiceUnavailableError
from forge.testing.gitrepos import Content, Symlink, commit_files

PROJECT = "name: svc\nphases:\n  build:\n    steps:\n      - {name: b, run: make}\n"


def _served(git_daemon: ServiceProcess, name: str) -> tuple[Path, str]:
    """A new repository under the daemon's base dir and its git:// URL."""
    return Path(git_daemon.extra["base_dir"]) / f"{name}.git", f"{git_daemon.url}{name}.git"


def _fsck(path: Path) -> None:
    subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"], check=True, capture_output=True)


async def test_clone_over_git_daemon_then_fetch_incrementally(git_daemon: ServiceProcess, tmp_path: Path) -> None:
    source, url = _served(git_daemon, "clone-fetch")
    first = commit_files(source, {"svc/.forge/project.yaml": PROJECT, "svc/a.txt": "1"})
    commit_files(source, {"b.txt": "1"}, branch="feature")
    subprocess.run(["git", "--git-dir", str(source), "tag", "v1", first], check=True)
    mirrors = Pygit2Mirrors(tmp_path / "cache")

    reader = await mirrors.sync("acme/mono", url)
    assert reader.resolve("main") == first
    assert reader.resolve("v1") == first
    assert reader.resolve("HEAD") == first
    assert reader.resolve("feature") != first
    assert (tmp_path / "cache" / "acme" / "mono.git" / "HEAD").exists()

    second = commit_files(source, {"svc/a.txt": "2"})
    subprocess.run(["git", "--git-dir", str(source), "branch", "-D", "feature"], check=True, capture_output=True)
    stale = await mirrors.open("acme/mono")
    with pytest.raises(NotFoundError):
        stale.resolve(second)
    reader = await mirrors.sync("acme/mono", url)
    assert reader.resolve("main") == second
    with pytest.raises(NotFoundError):
        reader.resolve("feature")  # pruned
    result = await asyncio.to_thread(discover, reader, second, first)
    assert [(a.project, a.reasons) for a in result.affected] == [("svc", ["changed: svc/a.txt"])]
    _fsck(tmp_path / "cache" / "acme" / "mono.git")


async def test_clone_from_a_local_path_and_file_url(tmp_path: Path) -> None:
    source = tmp_path / "src.git"
    commit = commit_files(source, {"svc/.forge/project.yaml": PROJECT})
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    reader = await mirrors.sync("acme/local", str(source))
    assert reader.resolve("main") == commit
    reader = await mirrors.sync("acme/file", source.as_uri())
    assert reader.resolve("main") == commit
    remote = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "cache/acme/file.git"), "remote", "get-url", "origin"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert remote == str(source)  # fetched as a path, not through libgit2's slow file:// transport


async def test_concurrent_syncs_of_one_mirror_both_succeed(git_daemon: ServiceProcess, tmp_path: Path) -> None:
    source, url = _served(git_daemon, "concurrent")
    files = {f"d{i}/f{j}.txt": f"{i}-{j}" for i in range(20) for j in range(20)}
    commit = commit_files(source, {"svc/.forge/project.yaml": PROJECT, **files})
    cache = tmp_path / "cache"
    outcomes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            reader = asyncio.run(Pygit2Mirrors(cache).sync("acme/race", url))
            outcomes.append(reader.resolve("main"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert outcomes == [commit, commit]
    mirror = cache / "acme" / "race.git"
    _fsck(mirror)
    assert sorted(p.name for p in (cache / "acme").iterdir()) == ["race.git", "race.git.lock"]

    newer = commit_files(source, {"d0/f0.txt": "changed"})
    results = await asyncio.gather(*(Pygit2Mirrors(cache).sync("acme/race", url) for _ in range(3)))
    assert [r.resolve("main") for r in results] == [newer] * 3
    _fsck(mirror)


async def test_unknown_revision_and_unsynced_mirror(tmp_path: Path) -> None:
    source = tmp_path / "src.git"
    commit_files(source, {"a": "1"})
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    with pytest.raises(NotFoundError, match="sync it first"):
        await mirrors.open("acme/never")
    reader = await mirrors.sync("acme/x", str(source))
    for rev in ("nope", "0" * 40, "main~5", "a..b..c"):
        with pytest.raises(NotFoundError):
            reader.resolve(rev)
    with pytest.raises(NotFoundError):
        reader.tree_entries("1" * 40)


async def test_unreachable_remote_is_service_unavailable(tmp_path: Path) -> None:
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    url = f"git://127.0.0.1:{free_port()}/nothing.git"
    with pytest.raises(ServiceUnavailableError, match=url) as caught:
        await mirrors.sync("acme/gone", url)
    assert caught.value.details == {"url": url}
    assert not (tmp_path / "cache" / "acme" / "gone.git").exists()
    with pytest.raises(ServiceUnavailableError, match="missing"):
        await mirrors.sync("acme/gone", str(tmp_path / "missing"))


async def test_a_wanted_commit_already_mirrored_is_not_fetched(git_daemon: ServiceProcess, tmp_path: Path) -> None:
    path, url = _served(git_daemon, "wanted")
    first = commit_files(path, {"a.txt": "1"})
    mirrors = Pygit2Mirrors(tmp_path / "cache")
    await mirrors.sync("acme/wanted", url)
    gone = f"git://127.0.0.1:{free_port()}/wanted.git"  # nothing answers here: any fetch would fail
    reader = await mirrors.sync("acme/wanted", gone, want=first)
    assert reader.resolve(first) == first
    second = commit_files(path, {"a.txt": "2"})
    with pytest.raises(ServiceUnavailableError):
        await mirrors.sync("acme/wanted", gone, want=second)
    assert (await mirrors.sync("acme/wanted", url, want=second)).resolve(second) == second


def test_changed_paths_equals_libgit2_diff(tmp_path: Path) -> None:
    rnd = random.Random(7)
    repo = tmp_path / "r.git"
    names = ["a.txt", "b/c.txt", "b/d/e.txt", "f/g/h.txt", "b/d/k.txt", "z.txt", "b/x/y/z.txt"]
    shas = []
    for _ in range(30):
        files: dict[str, Content] = {rnd.choice(names): rnd.choice([None, str(rnd.random())]) for _ in range(3)}
        shas.append(commit_files(repo, files))
    shas.append(commit_files(repo, {"b/d/e.txt": Symlink("x")}))
    reader, raw = Pygit2Reader(repo), pygit2.Repository(str(repo))
    for old in shas:
        for new in shas[::4]:
            deltas = raw[old].peel(pygit2.Tree).diff_to_tree(raw[new].peel(pygit2.Tree)).deltas
            expected = sorted({p for d in deltas for p in (d.old_file.path, d.new_file.path)})
            assert reader.changed_paths(old, new) == expected

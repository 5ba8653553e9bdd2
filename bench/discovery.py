"""Discovery benchmark: a generated monorepo vs the git floor (DESIGN §3 "Speed").

    .venv/bin/python bench/discovery.py [--projects 1000 --files 100000 --runs 7 --json]

Generates (once, with ``git fast-import``) a bare repository under ``bench/.data/`` whose first
commit holds ``--projects`` projects and about ``--files`` files, and whose second commit
changes one file in each of 3 projects. Then reports medians of:

- the git floor: ``git ls-tree -r <commit>`` + ``git diff --name-only <base> <commit>``;
- in-process discovery of the second commit from a warm mirror: with a warm cache (the first
  commit was discovered before: configs by blob id and unchanged trees are cached), with the
  same commit discovered again, and with a cold cache;
- the whole ``forge discover --json`` process (a new interpreter): without a cache, and with
  the on-disk cache filled by a run on the first commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from forge.testing.measure import machine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
CHANGED_PROJECTS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()
    source = DATA / f"mono-{args.projects}p-{args.files}f.git"
    started = time.perf_counter()
    if not (source / "HEAD").exists():
        _generate(source, args.projects, args.files)
        print(f"generated {source} in {time.perf_counter() - started:.1f}s")
    base, commit = _rev(source, "main~1"), _rev(source, "main")
    runs = args.runs

    floor = _median(runs, lambda: _git_floor(source, base, commit))
    mirror_dir = DATA / "mirrors"
    reader_path = asyncio.run(_warm_mirror(mirror_dir, source))
    warm_new = _median(runs, lambda: _discover_new_commit(reader_path, base, commit))
    warm_same = _median(runs, _discover_same_commit(reader_path, base, commit))
    cold = _median(max(3, runs // 2), lambda: _discover_cold(reader_path, base, commit))
    process = _median(max(3, runs // 2), lambda: _forge_discover_process(reader_path, base, commit, None))
    disk = DATA / "forge-cache"
    subprocess.run(["rm", "-rf", str(disk)], check=True)
    _forge_discover_process(reader_path, base, base, disk)  # the previous push filled the disk cache
    process_warm = _median(runs, lambda: _forge_discover_process(reader_path, base, commit, disk))

    print(f"machine: {machine()}")
    print(f"repo: {args.projects} projects, {_count_files(source, commit)} files; {CHANGED_PROJECTS} projects changed")
    rows = [
        ("git floor (ls-tree -r + diff --name-only)", floor),
        ("discover, new commit, warm cache", warm_new),
        ("discover, same commit again, warm cache", warm_same),
        ("discover, cold cache", cold),
        ("forge discover --json process, no cache", process),
        ("forge discover --json process, disk cache", process_warm),
    ]
    for label, seconds in rows:
        print(f"{label:<45} {seconds * 1000:8.1f} ms   {seconds / floor:5.2f}x floor")
    if args.json:
        ratios = {
            "floor_ms": round(floor * 1000, 1),
            "warm_ratio": round(warm_new / floor, 2),
            "same_commit_ratio": round(warm_same / floor, 2),
            "cold_ratio": round(cold / floor, 2),
            "process_ratio": round(process / floor, 2),
            "process_cached_ratio": round(process_warm / floor, 2),
        }
        print(json.dumps(ratios))


def _median(runs: int, fn: Callable[[], float | None]) -> float:
    samples = []
    for _ in range(runs):
        measured = fn()
        samples.append(measured if measured is not None else 0.0)
    return statistics.median(samples)


def _git_floor(source: Path, base: str, commit: str) -> float:
    git = ["git", "--git-dir", str(source)]
    started = time.perf_counter()
    subprocess.run([*git, "ls-tree", "-r", commit], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*git, "diff", "--name-only", base, commit], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


async def _warm_mirror(mirror_dir: Path, source: Path) -> Path:
    from forge.adapters.pygit2_git import Pygit2Mirrors

    mirrors = Pygit2Mirrors(mirror_dir)
    await mirrors.sync("bench/mono", str(source))
    await mirrors.sync("bench/mono", str(source))  # the incremental path: nothing new
    return mirrors.mirror_path("bench/mono")


def _discover_new_commit(mirror: Path, base: str, commit: str) -> float:
    from forge.adapters.pygit2_git import Pygit2Reader
    from forge.discovery import ConfigCache, discover

    cache = ConfigCache()
    discover(Pygit2Reader(mirror), base, None, cache=cache)  # the previous push warmed the cache
    started = time.perf_counter()
    result = discover(Pygit2Reader(mirror), commit, base, branch="main", cache=cache)
    elapsed = time.perf_counter() - started
    assert len(result.affected) >= CHANGED_PROJECTS, result.affected
    return elapsed


def _discover_same_commit(mirror: Path, base: str, commit: str) -> Callable[[], float]:
    from forge.adapters.pygit2_git import Pygit2Reader
    from forge.discovery import ConfigCache, discover

    cache = ConfigCache()
    discover(Pygit2Reader(mirror), commit, base, cache=cache)

    def run() -> float:
        started = time.perf_counter()
        discover(Pygit2Reader(mirror), commit, base, branch="main", cache=cache)
        return time.perf_counter() - started

    return run


def _discover_cold(mirror: Path, base: str, commit: str) -> float:
    from forge.adapters.pygit2_git import Pygit2Reader
    from forge.discovery import ConfigCache, discover

    started = time.perf_counter()
    discover(Pygit2Reader(mirror), commit, base, branch="main", cache=ConfigCache())
    return time.perf_counter() - started


def _forge_discover_process(mirror: Path, base: str, commit: str, cache_dir: Path | None) -> float:
    forge = Path(sys.executable).with_name("forge")
    argv = (
        [str(forge)]
        if forge.exists()
        else [sys.executable, "-c", "import sys; from forge.cli.discover import discover; sys.exit(discover())"]
    )
    started = time.perf_counter()
    if forge.exists():
        argv.append("discover")
    cache = ["--cache-dir", str(cache_dir)] if cache_dir is not None else ["--no-cache"]
    subprocess.run(
        [*argv, str(mirror), "--rev", commit, "--base", base, "--json", *cache], check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def _rev(source: Path, rev: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(source), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()


def _count_files(source: Path, commit: str) -> int:
    out = subprocess.run(
        ["git", "--git-dir", str(source), "ls-tree", "-r", "--name-only", commit], check=True, capture_output=True
    )
    return out.stdout.count(b"\n")


def _generate(target: Path, projects: int, files: int) -> None:
    staging = target.with_name(target.name + ".tmp")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(staging)], check=True)
    stream = b"".join(_fast_import_stream(projects, files))
    subprocess.run(["git", "--git-dir", str(staging), "fast-import", "--quiet"], input=stream, check=True)
    staging.rename(target)


def _project_dir(index: int) -> str:
    return f"{('services', 'libs', 'tools')[index % 3]}/team{index % 20:02d}/p{index:04d}"


def _project_yaml(index: int) -> bytes:
    deps = sorted({f"p{(index * 7 + k) % index:04d}" for k in range(1, 3)}) if index > 1 else []
    lines = [f"name: p{index:04d}", f"depends_on: [{', '.join(deps)}]", f'paths: ["shared/schemas/s{index % 50}/**"]']
    lines += ["release:", "  on:", "    - branch: main", "phases:"]
    lines += ["  build:", "    steps:", "      - name: compile", "        run: make build", "        timeout: 10m"]
    lines += ["  test:", "    steps:", "      - name: unit", "        run: make test", "      - name: lint"]
    lines += ["        earthly: +lint"]
    return ("\n".join(lines) + "\n").encode()


def _fast_import_stream(projects: int, files: int) -> Iterator[bytes]:
    per_project = max(1, (files - projects) // projects)
    mark = 0
    entries: list[tuple[str, int]] = []

    def blob(data: bytes) -> Iterator[bytes]:
        nonlocal mark
        mark += 1
        yield b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data)

    yield from blob(b"name: bench/mono\naffects_all: [uv.lock]\n")
    entries.append((".forge/repo.yaml", mark))
    yield from blob(b"lock v1\n")
    entries.append(("uv.lock", mark))
    for index in range(projects):
        directory = _project_dir(index)
        yield from blob(_project_yaml(index))
        entries.append((f"{directory}/.forge/project.yaml", mark))
        for number in range(per_project):
            yield from blob(f"# {directory} file {number}\n".encode())
            entries.append((f"{directory}/src/m{number // 10}/f{number}.py", mark))
    yield from _commit(entries, "initial")
    changed = []
    for index in range(CHANGED_PROJECTS):
        project = (index * 331 + 17) % projects
        yield from blob(f"# changed {project}\n".encode())
        changed.append((f"{_project_dir(project)}/src/m0/f0.py", mark))
    yield from _commit(changed, "touch 3 projects")  # fast-import continues the branch


def _commit(entries: list[tuple[str, int]], message: str) -> Iterator[bytes]:
    msg = message.encode()
    yield b"commit refs/heads/main\ncommitter Bench <bench@forge.invalid> 1700000000 +0000\n"
    yield b"data %d\n%s\n" % (len(msg), msg)
    for path, mark in entries:
        yield b"M 100644 :%d %s\n" % (mark, path.encode())
    yield b"\n"


if __name__ == "__main__":
    main()

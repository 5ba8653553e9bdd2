"""``forge discover PATH``: projects, affected set, phase groups and steps of a local repository.

- ``PATH``: a git work tree (any directory inside it) or a bare repository; read from git
  objects, never from the files on disk, so uncommitted changes are ignored.
- ``--rev`` (default ``HEAD``): the commit to discover.
- ``--base``: the commit to compare with; by default the first parent of ``--rev``; a root
  commit (or ``--no-base``) marks every project affected (``no base: all``).
- ``--branch``: for release triggers; by default the branch HEAD points at when ``--rev`` is
  ``HEAD``, else ``--rev`` itself when it names a local branch. ``--tag``: discover as a run of that
  tag (tag release triggers; no branch).
- ``--cache-dir`` (default ``$XDG_CACHE_HOME/forge``, else ``~/.cache/forge``): where the
  content-addressed discovery cache (configs by blob id, config locations by tree id) is kept
  between runs, so a run re-parses only the config files that changed; ``--no-cache`` skips it.

Exit codes: 0 the result on stdout (a summary, or the full result with ``--json``); 2 invalid
configuration, every ``file:line: field: reason`` on stderr (and ``{"errors": [...]}`` on stdout
with ``--json``); 1 any other failure, one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from forge.domain.discovery import DiscoveryResult
from forge.errors import ConfigError, ForgeError

__all__ = ["discover"]


@click.command("discover")
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--rev", default="HEAD", show_default=True, help="Commit to discover.")
@click.option("--base", default=None, help="Commit to compare with [default: first parent of --rev].")
@click.option("--no-base", is_flag=True, help="Compare with nothing: every project is affected.")
@click.option("--branch", default=None, help="Branch for release triggers [default: HEAD's branch].")
@click.option("--tag", default=None, help="Discover as a run of this tag (tag release triggers, no branch).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Discovery cache directory.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the discovery cache.")
def discover(
    path: Path,
    rev: str,
    base: str | None,
    no_base: bool,
    branch: str | None,
    tag: str | None,
    as_json: bool,
    cache_dir: Path | None,
    no_cache: bool,
) -> None:
    """Discover projects and the affected set of the git repository at PATH."""
    cache_file = None if no_cache else (cache_dir or _default_cache_dir()) / "discovery-cache.json"
    try:
        result = _run(path, rev, base, no_base=no_base, branch=branch, tag=tag, cache_file=cache_file)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        if as_json:
            errors = [{**i.to_dict(), "message": str(i)} for i in exc.issues]
            click.echo(json.dumps({"errors": errors}, indent=2, ensure_ascii=False))
        sys.exit(2)
    except ForgeError as exc:
        click.echo(f"forge discover: {exc.message.splitlines()[0] if exc.message else exc.code}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback (STYLE §4)
        click.echo(f"forge discover: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(_summary(result))


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "forge"


def _run(
    path: Path,
    rev: str,
    base: str | None,
    *,
    no_base: bool,
    branch: str | None,
    tag: str | None,
    cache_file: Path | None,
) -> DiscoveryResult:
    from forge.adapters.pygit2_git import Pygit2Reader
    from forge.discovery import ConfigCache
    from forge.discovery import discover as discover_commit
    from forge.discovery.persist import load_cache, save_cache
    from forge.errors import NotFoundError

    if not path.exists():
        raise NotFoundError(f"no such directory: {path}")
    reader = Pygit2Reader.for_directory(path)
    commit = reader.resolve(rev)
    if no_base:
        base = None
    elif base is None:
        base = reader.first_parent(commit)
    if tag is not None:
        branch = None
    elif branch is None:
        if rev == "HEAD":
            branch = reader.current_branch()
        elif reader.has_branch(rev):
            branch = rev
    cache = load_cache(cache_file) if cache_file is not None else ConfigCache()
    try:
        return discover_commit(reader, commit, base, branch=branch, tag=tag, cache=cache)
    finally:
        if cache_file is not None and (cache.stats.parses or cache.stats.tree_walks):
            with contextlib.suppress(OSError):
                save_cache(cache, cache_file)


def _summary(result: DiscoveryResult) -> str:
    base = result.base[:12] if result.base else "none"
    branch = f", branch {result.branch}" if result.branch else f", tag {result.tag}" if result.tag else ""
    counts = f"{len(result.projects)} projects, {len(result.affected)} affected, {result.changed_files} changed files"
    lines = [f"commit {result.commit[:12]} (base {base}{branch}): {counts}"]
    width = max((len(a.project) for a in result.affected), default=0)
    lines.append("affected:" if result.affected else "affected: none")
    lines.extend(f"  {a.project:<{width}}  {'; '.join(a.reasons)}" for a in result.affected)
    if result.phase_groups:
        lines.append("phase groups:")
        lines.extend(f"  {g.group}: {', '.join(g.phases)}" for g in result.phase_groups)
    lines.append("releases:" if result.releases else "releases: none")
    lines.extend(f"  {r.project}  {r.reason}" for r in result.releases)
    return "\n".join(lines)

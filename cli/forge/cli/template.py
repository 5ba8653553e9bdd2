"""``forge template PATH``: the Argo WorkflowTemplate a push of a local repository would run.

- ``PATH``: a git work tree (any directory inside it) or a bare repository, read from git
  objects only (uncommitted changes are ignored).
- ``--rev`` (default ``HEAD``): the commit; ``--base``: the commit to compare with, by default
  the first parent of ``--rev`` (a root commit marks every project affected).
- Ids are deterministic placeholders so the output is stable: the run id is the UUIDv5 of the
  repository path and commit, each step id the UUIDv5 of ``<phase>/<project>/<step>`` under the
  run id. The clone URL is the repository path.

Exit codes: 0 the template YAML on stdout, or nothing on stdout and a note on stderr when no
affected project has a step (such a run needs no workflow); 2 invalid configuration, every
``file:line: field: reason`` on stderr; 1 any other failure, one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

import click

from forge.errors import ConfigError, ForgeError

if TYPE_CHECKING:
    from forge.workflows.templates import TemplateSpec

__all__ = ["template"]


@click.command("template")
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--rev", default="HEAD", show_default=True, help="Commit to build the template for.")
@click.option("--base", default=None, help="Commit to compare with [default: first parent of --rev].")
def template(path: Path, rev: str, base: str | None) -> None:
    """Print the Argo WorkflowTemplate of the git repository at PATH as YAML."""
    try:
        spec = _spec(path, rev, base)
        if spec is None:
            click.echo("forge template: no affected project has a step; the run needs no workflow", err=True)
            return
        from forge.workflows.templates import build_template, to_yaml

        text = to_yaml(build_template(spec))
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(2)
    except ForgeError as exc:
        click.echo(f"forge template: {exc.message.splitlines()[0] if exc.message else exc.code}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback (STYLE §4)
        click.echo(f"forge template: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(text, nl=False)


def _spec(path: Path, rev: str, base: str | None) -> TemplateSpec | None:
    from forge.adapters.pygit2_git import Pygit2Reader
    from forge.discovery import discover
    from forge.errors import NotFoundError
    from forge.workflows.templates import TemplateSpec, has_work

    if not path.exists():
        raise NotFoundError(f"no such directory: {path}")
    reader = Pygit2Reader.for_directory(path)
    commit = reader.resolve(rev)
    if base is None:
        base = reader.first_parent(commit)
    branch = reader.current_branch() if rev == "HEAD" else (rev if reader.has_branch(rev) else None)
    result = discover(reader, commit, base, branch=branch)
    if not has_work(result):
        return None
    location = str(reader.path.resolve())
    run_id = uuid5(NAMESPACE_URL, f"{location}@{commit}")
    step_ids: dict[tuple[str, str, str], UUID] = {
        (step.phase, project.name, step.name): uuid5(run_id, f"{step.phase}/{project.name}/{step.name}")
        for project in result.projects
        for step in project.steps
    }
    return TemplateSpec(
        run_id=run_id,
        repository=result.repository or _repo_name(reader.path.resolve()),
        commit_sha=commit,
        branch=branch,
        clone_url=location,
        discovery=result,
        step_ids=step_ids,
    )


def _repo_name(git_dir: Path) -> str:
    """``local/<directory>`` for a repository without ``name`` in ``.forge/repo.yaml``."""
    directory = git_dir.parent if git_dir.name == ".git" else git_dir
    return f"local/{directory.name.removesuffix('.git') or 'repo'}"

"""Discovery of one commit: config files → validated projects → affected set → phases and steps."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from pydantic import BaseModel

from forge.discovery.affected import ProjectScope, affected_projects
from forge.discovery.assemble import discovered_project, phase_groups
from forge.discovery.cache import ConfigCache
from forge.discovery.checks import ProjectFile, check_nesting, check_projects
from forge.discovery.load import Issue, Loaded, load_config
from forge.discovery.releases import (
    check_release_config,
    deploy_intents,
    release_intents,
    release_phase,
    unknown_release_requests,
)
from forge.discovery.walk import PROJECT_FILE, REPO_FILE, FoundFile, find_config_files
from forge.domain.config import ProjectConfig, RepoConfig
from forge.domain.discovery import DiscoveredProject, DiscoveryResult
from forge.errors import ConfigError, ConfigIssue
from forge.ports.git import EntryKind, GitReader

__all__ = ["MAX_CONFIG_BYTES", "discover"]

MAX_CONFIG_BYTES = 256 * 1024
_M = TypeVar("_M", bound=BaseModel)


def discover(
    reader: GitReader,
    commit: str,
    base: str | None,
    *,
    branch: str | None = None,
    tag: str | None = None,
    requested_releases: Collection[str] = (),
    cache: ConfigCache | None = None,
) -> DiscoveryResult:
    """Projects of ``commit``, the ones affected since ``base`` and why, phase groups, steps and releases.

    ``base`` None marks every project affected (``no base: all``). ``branch``, ``tag`` and
    ``requested_releases`` (manual release requests) decide the release intents
    (:mod:`forge.discovery.releases`). Raises ``ConfigError`` listing every issue of every config file,
    ``NotFoundError`` for an unknown revision. Pass one ``cache`` across calls: configs are
    parsed once per blob id and unchanged subtrees are never walked again.
    """
    cache = cache if cache is not None else ConfigCache()
    sha = reader.resolve(commit)
    base_sha = reader.resolve(base) if base is not None else None
    files = find_config_files(reader, reader.commit_tree(sha), cache)
    issues: list[ConfigIssue] = []
    repo_config: RepoConfig | None = RepoConfig()
    repo_blob = ""
    projects: list[ProjectFile] = []
    for found in files:
        if found.kind not in (EntryKind.BLOB, EntryKind.EXECUTABLE):
            what = "a symbolic link" if found.kind is EntryKind.LINK else f"a {found.kind.value}"
            issues.append(ConfigIssue(found.path, None, "", f"is {what}; configuration must be a regular file"))
            if found.name == REPO_FILE:
                repo_config = None
        elif found.name == REPO_FILE:
            repo_config = _load(reader, found, RepoConfig, cache, issues).config
            repo_blob = found.blob_id
        elif found.name == PROJECT_FILE:
            projects.append(
                ProjectFile(
                    found.path, found.directory, found.blob_id, _load(reader, found, ProjectConfig, cache, issues)
                )
            )
    issues.extend(check_nesting([(p.directory, p.path) for p in projects]))
    issues.extend(check_projects(projects, repo_config.phases if repo_config is not None else None))
    if repo_config is not None:
        issues.extend(check_release_config(projects, repo_config))
    issues.extend(unknown_release_requests(projects, requested_releases))
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: (i.file, i.line or 0, i.field, i.reason)))
    assert repo_config is not None
    discovered = sorted((_project(p, repo_config, repo_blob, cache) for p in projects), key=lambda p: p.name)
    changed = reader.changed_paths(base_sha, sha) if base_sha is not None else None
    globs = {p.loaded.config.name: p.loaded.config.paths for p in projects if p.loaded.config is not None}
    scopes = [ProjectScope(p.name, p.path, globs[p.name], p.depends_on) for p in discovered]
    affected = affected_projects(scopes, changed, repo_config.affects_all)
    affected_names = {a.project for a in affected}
    releases = release_intents(
        [p.loaded.config for p in projects if p.loaded.config is not None],
        affected_names,
        branch=branch,
        tag=tag,
        strategy=repo_config.tagging.strategy,
        requested=requested_releases,
    )
    configs = {p.loaded.config.name: p.loaded.config for p in projects if p.loaded.config is not None}
    groups = phase_groups(repo_config.phases, (p for p in discovered if p.name in affected_names))
    discovered, groups = release_phase(discovered, configs, releases, groups)
    return DiscoveryResult(
        commit=sha,
        base=base_sha,
        branch=branch,
        repository=repo_config.name,
        projects=discovered,
        affected=affected,
        phase_groups=groups,
        changed_files=len(changed) if changed is not None else 0,
        tag=tag,
        releases=releases,
        deploys=deploy_intents(releases, repo_config.environments),
    )


def _project(project: ProjectFile, repo_config: RepoConfig, repo_blob: str, cache: ConfigCache) -> DiscoveredProject:
    key = (project.blob_id, project.directory, repo_blob)
    built = cache.project(key)
    if built is None:
        built = discovered_project(project, repo_config.phases)
        cache.put_project(key, built)
    return built


def _load(
    reader: GitReader, found: FoundFile, model: type[_M], cache: ConfigCache, issues: list[ConfigIssue]
) -> Loaded[_M]:
    """The cached outcome for the blob, else check its size, read, parse and validate it."""
    kind = model.__name__
    loaded: Loaded[_M] | None = cache.config(kind, found.blob_id)
    if loaded is None:
        size = reader.blob_size(found.blob_id)
        if size > MAX_CONFIG_BYTES:
            loaded = Loaded(None, (Issue(None, "", f"the file is {size} bytes; the limit is {MAX_CONFIG_BYTES}"),))
        else:
            loaded = load_config(reader.read_blob(found.blob_id), model)
        cache.put_config(kind, found.blob_id, loaded)
    issues.extend(ConfigIssue(found.path, i.line, i.field, i.reason) for i in loaded.issues)
    return loaded

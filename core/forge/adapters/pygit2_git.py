"""GitMirrors and GitReader on pygit2: bare mirrors under a cache directory, read without checkout.

Layout: ``<cache_dir>/<owner>/<repo>.git`` plus ``<repo>.git.lock``, the ``fcntl.flock`` file that
serialises syncs of one mirror across threads and processes. A first sync fetches into a fresh
bare repository beside the mirror and renames it into place, so a crash never leaves a
half-cloned mirror. Later syncs fetch ``+refs/heads/*:refs/heads/*`` and
``+refs/tags/*:refs/tags/*`` (pruning deleted branches) into it.

A local path is fetched as a path, never as a ``file://`` URL (libgit2's file transport packs
objects and is about ten times slower).

**Private repositories**: every fetch (first clone and later syncs) logs in with the worker's
``GitCredentials`` (``FORGE_GIT__USERNAME``/``__PASSWORD`` for HTTPS, ``__SSH_KEY``/``__SSH_KEY_PASSPHRASE``/
``__SSH_USER`` for SSH) and checks an SSH host's key against ``FORGE_GIT__SSH_KNOWN_HOSTS`` (unset:
``$HOME/.ssh/known_hosts``), as ``forge.adapters._git_remote_auth`` says. Credentials reach libgit2 only when
the remote asks, never the mirror's config or a stored URL. A refused login fails the sync with
``AuthenticationError`` code ``source_auth_failed``, a refused host key with code ``source_host_key_rejected``
(``source: <url>: authentication failed (fetch from the remote): the remote refused the credentials``: one line,
the URL without user info, never a secret), an unreadable known_hosts file with ``InvalidInputError``: all
permanent, so the job fails at once instead of retrying. A remote that cannot be reached is
``ServiceUnavailableError`` (retried). A refused first clone leaves no mirror behind.

``checkout`` writes a commit's tree straight from the mirror's object database into a new
directory: no ``.git``, no index, the mirror's refs untouched, no lock needed (objects are
immutable). Measured on 5,000 files (ext4, median of 5): writing the blobs 2.8 s, libgit2's
``checkout_tree(directory=...)`` 3.3 s, a clone from the mirror path plus checkout 3.3 s; all of
it is file-system cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import TypeVar

import pygit2
from pygit2.enums import FetchPrune, FileMode

from forge.adapters._git_remote_auth import GitCredentials, GitRemote
from forge.adapters._pygit2_local import fetch_source, locked
from forge.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
from forge.ports.git import EntryKind, GitReader, TreeEntry
from forge.settings import GitSettings

__all__ = ["Pygit2Mirrors", "Pygit2Reader"]

_O = TypeVar("_O", bound=pygit2.Object)
_SETTINGS = "FORGE_GIT"

_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_KINDS: dict[int, EntryKind] = {
    FileMode.BLOB: EntryKind.BLOB,
    FileMode.BLOB_EXECUTABLE: EntryKind.EXECUTABLE,
    FileMode.LINK: EntryKind.LINK,
    FileMode.TREE: EntryKind.TREE,
    FileMode.COMMIT: EntryKind.SUBMODULE,
}


class Pygit2Reader:
    """Read-only access to one repository (bare mirror or work tree); confine to one thread.

    ``root`` (a repo-relative directory) makes the reader see that directory of every commit as
    the root: ``forge discover examples/monorepo`` treats the folder as the repository it is.
    """

    def __init__(self, path: Path | str, *, root: str = ""):
        try:
            self._repo = pygit2.Repository(str(path))
        except (pygit2.GitError, KeyError) as exc:
            raise NotFoundError(f"not a git repository: {path}") from exc
        self.path = Path(self._repo.path)
        self.root = root.strip("/")

    @classmethod
    def for_directory(cls, directory: Path) -> Pygit2Reader:
        """The repository holding ``directory``, rooted at ``directory`` when it is a sub-folder of a work tree."""
        found = pygit2.discover_repository(str(directory))
        if found is None:
            raise NotFoundError(f"not a git repository: {directory}")
        reader = cls(found)
        workdir = reader._repo.workdir
        if workdir:
            relative = directory.resolve().relative_to(Path(workdir).resolve())
            reader.root = relative.as_posix() if str(relative) != "." else ""
        return reader

    def resolve(self, rev: str) -> str:
        return str(self._commit(rev).id)

    def commit_tree(self, commit: str) -> str:
        tree = self._root_tree(commit)
        if tree is None:
            raise NotFoundError(f"{self.root} does not exist at {commit}")
        return str(tree.id)

    def first_parent(self, commit: str) -> str | None:
        """The first parent of ``commit``, ``None`` for a root commit."""
        parents = self._commit(commit).parent_ids
        return str(parents[0]) if parents else None

    def current_branch(self) -> str | None:
        """The branch HEAD points at, ``None`` when detached or unborn."""
        if self._repo.head_is_detached or self._repo.head_is_unborn:
            return None
        return self._repo.head.shorthand

    def has_branch(self, name: str) -> bool:
        return f"refs/heads/{name}" in self._repo.references

    def tree_entries(self, tree_id: str) -> list[TreeEntry]:
        tree = self._object(tree_id, pygit2.Tree)
        kinds = _KINDS
        entries = [TreeEntry(e.name or "", str(e.id), kinds.get(e.filemode, EntryKind.BLOB)) for e in tree]
        entries.sort(key=lambda e: e.name)
        return entries

    def blob_size(self, blob_id: str) -> int:
        try:
            _, size = self._repo.odb.read_header(pygit2.Oid(hex=blob_id))
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise NotFoundError(f"unknown blob {blob_id}") from exc
        return size

    def read_blob(self, blob_id: str) -> bytes:
        return self._object(blob_id, pygit2.Blob).data

    def changed_paths(self, base: str, commit: str) -> list[str]:
        """Compares tree ids and descends only into subtrees that differ.

        libgit2's tree-to-tree diff walks both trees whole (~0.1 s on 100k files); skipping
        equal subtree ids makes a small change cost microseconds.
        """
        paths: list[str] = []
        pending: list[tuple[str, pygit2.Tree | None, pygit2.Tree | None]] = [
            ("", self._root_tree(base), self._root_tree(commit))
        ]
        while pending:
            prefix, old, new = pending.pop()
            old_entries = {e.name: e for e in old} if old is not None else {}
            new_entries = {e.name: e for e in new} if new is not None else {}
            for name in old_entries.keys() | new_entries.keys():
                before, after = old_entries.get(name), new_entries.get(name)
                if (
                    before is not None
                    and after is not None
                    and before.id == after.id
                    and before.filemode == after.filemode
                ):
                    continue
                path = prefix + str(name)
                old_tree = self._subtree(before)
                new_tree = self._subtree(after)
                if old_tree is not None or new_tree is not None:
                    pending.append((path + "/", old_tree, new_tree))
                if (before is not None and old_tree is None) or (after is not None and new_tree is None):
                    paths.append(path)
        paths.sort()
        return paths

    def _root_tree(self, rev: str) -> pygit2.Tree | None:
        """The commit's tree, or its ``root`` directory (None when that is not a directory there)."""
        tree = self._commit(rev).tree
        if not self.root:
            return tree
        try:
            entry = tree[self.root]
        except KeyError:
            return None
        return self._subtree(entry)

    def _subtree(self, entry: pygit2.Object | None) -> pygit2.Tree | None:
        if entry is None or entry.filemode != FileMode.TREE:
            return None
        return self._object(str(entry.id), pygit2.Tree)

    def _commit(self, rev: str) -> pygit2.Commit:
        try:
            obj = self._repo.revparse_single(rev)
            return obj.peel(pygit2.Commit)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise NotFoundError(f"unknown revision {rev!r} in {self.path}") from exc

    def _object(self, oid: str, kind: type[_O]) -> _O:
        try:
            obj = self._repo[oid]
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise NotFoundError(f"unknown object {oid}") from exc
        if not isinstance(obj, kind):
            raise NotFoundError(f"{oid} is not a {kind.__name__.lower()}")
        return obj


class Pygit2Mirrors:
    """A bare mirror per repository under ``cache_dir``, fetched with ``credentials`` (SSH host keys checked
    against ``known_hosts``, unset: ``$HOME/.ssh/known_hosts``); pygit2 runs in ``asyncio.to_thread``."""

    def __init__(self, cache_dir: Path, *, credentials: GitCredentials | None = None, known_hosts: Path | None = None):
        self.cache_dir = cache_dir
        self._credentials = credentials or GitCredentials()
        self._known_hosts = known_hosts

    @classmethod
    def from_settings(cls, settings: GitSettings) -> Pygit2Mirrors:
        return cls(
            settings.cache_dir,
            credentials=GitCredentials.from_settings(settings),
            known_hosts=settings.ssh_known_hosts,
        )

    def mirror_path(self, repository: str) -> Path:
        if not _REPOSITORY.match(repository) or ".." in repository:
            raise InvalidInputError(f"repository must be owner/repo, got {repository!r}")
        return self.cache_dir / f"{repository}.git"

    async def sync(self, repository: str, url: str, *, want: str | None = None) -> GitReader:
        path = self.mirror_path(repository)
        return await asyncio.to_thread(self._sync, path, url, want)

    async def open(self, repository: str) -> GitReader:
        path = self.mirror_path(repository)
        return await asyncio.to_thread(self._open, path, repository)

    async def checkout(self, repository: str, commit: str, dest: Path) -> None:
        path = self.mirror_path(repository)
        await asyncio.to_thread(self._checkout, path, repository, commit, dest)

    @staticmethod
    def _checkout(path: Path, repository: str, commit: str, dest: Path) -> None:
        if not (path / "HEAD").exists():
            raise NotFoundError(f"no mirror of {repository}; sync it first")
        repo = pygit2.Repository(str(path))
        try:
            tree = repo.revparse_single(commit).peel(pygit2.Commit).tree
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise NotFoundError(f"unknown commit {commit!r} in {repository}", details={"commit": commit}) from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            dest.mkdir()
        except FileExistsError as exc:
            raise InvalidInputError(f"checkout destination {dest} already exists") from exc
        _write_tree(repo, tree, dest)

    @staticmethod
    def _open(path: Path, repository: str) -> Pygit2Reader:
        if not (path / "HEAD").exists():
            raise NotFoundError(f"no mirror of {repository}; sync it first")
        return Pygit2Reader(path)

    def _sync(self, path: Path, url: str, want: str | None) -> Pygit2Reader:
        source = fetch_source(url)
        remote = GitRemote(
            url,
            self._credentials,
            self._known_hosts,
            label="source",
            settings=_SETTINGS,
            auth_code="source_auth_failed",
            host_key_code="source_host_key_rejected",
        )
        with locked(path.with_name(path.name + ".lock")):
            if (path / "HEAD").exists():
                repo = pygit2.Repository(str(path))
                if want is None or not _has_commit(repo, want):
                    _fetch(repo, source, remote)
            else:
                _clone(path, source, remote)
        return Pygit2Reader(path)


def _has_commit(repo: pygit2.Repository, sha: str) -> bool:
    """Whether the mirror already holds commit ``sha`` (commits are immutable: no fetch needed)."""
    try:
        return isinstance(repo[sha], pygit2.Commit)
    except (KeyError, ValueError):
        return False


def _write_tree(repo: pygit2.Repository, root: pygit2.Tree, dest: Path) -> None:
    """Materialise ``root`` under ``dest``; never follows a link, never overwrites anything.

    Directories are created with ``mkdir`` and files with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a
    crafted tree (a link and a directory of the same name, ``..`` entries) cannot write outside
    ``dest``.
    """
    pending: list[tuple[pygit2.Tree, Path]] = [(root, dest)]
    while pending:
        tree, folder = pending.pop()
        for entry in tree:
            name = entry.name or ""
            if name in {"", ".", ".."} or "/" in name or "\0" in name or name.lower() == ".git":
                raise InvalidInputError(f"refusing tree entry {name!r} under {folder.relative_to(dest)}")
            target = folder / name
            mode = entry.filemode
            if mode == FileMode.TREE:
                target.mkdir()
                pending.append((repo[entry.id].peel(pygit2.Tree), target))
            elif mode == FileMode.LINK:
                target.symlink_to(os.fsdecode(repo[entry.id].peel(pygit2.Blob).data))
            elif mode == FileMode.COMMIT:  # a submodule: an empty directory, as git leaves it
                target.mkdir()
            else:
                perm = 0o755 if mode == FileMode.BLOB_EXECUTABLE else 0o644
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perm)
                with os.fdopen(fd, "wb") as out:
                    out.write(repo[entry.id].peel(pygit2.Blob).data)


def _fetch(repo: pygit2.Repository, source: str, remote: GitRemote) -> pygit2.Remote:
    """Fetch branches and tags into the mirror; the ``origin`` remote, whose heads stay listable."""
    origin = repo.remotes["origin"]
    if origin.url != source:
        repo.remotes.set_url("origin", source)
        origin = repo.remotes["origin"]
    hidden = {repo.path.rstrip("/"): "<mirror>"}  # the cache's path is nobody's business
    try:
        with remote.translated("fetch from", hidden):
            origin.fetch(list(_REFSPECS), prune=FetchPrune.PRUNE, callbacks=remote.callbacks())
    except pygit2.GitError as exc:
        reason = remote.scrub(str(exc), hidden)
        raise ServiceUnavailableError(f"cannot fetch {remote.shown}: {reason}", details={"url": remote.shown}) from exc
    return origin


def _clone(path: Path, source: str, remote: GitRemote) -> None:
    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        repo = pygit2.init_repository(str(staging), bare=True)
        repo.remotes.create("origin", source, _REFSPECS[0])
        repo.remotes.add_fetch("origin", _REFSPECS[1])
        origin = _fetch(repo, source, remote)
        _point_head(repo, origin)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _point_head(repo: pygit2.Repository, origin: pygit2.Remote) -> None:
    """HEAD of the mirror follows the remote's HEAD (as listed by the fetch just made: no second connection,
    so no second login), else ``main``/``master``/the first branch."""
    branches = sorted(repo.branches.local)
    with contextlib.suppress(pygit2.GitError):
        for head in origin.list_heads(connect=False):
            if head.name == "HEAD" and head.symref_target:
                branches.insert(0, head.symref_target.removeprefix("refs/heads/"))
    for name in ("main", "master"):
        if name in branches:
            branches.insert(1, name)
    for name in branches:
        if f"refs/heads/{name}" in repo.references:
            repo.set_head(f"refs/heads/{name}")
            return

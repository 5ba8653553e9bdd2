"""GitOpsRepository on pygit2: a bare work copy of the remote, index-free commits, pushes without force.

The work copy is ``<work_dir>/<name>-<hash of url>.git``, a bare repository whose ``origin``
is the remote (a local path stays a path, never a ``file://`` URL: DESIGN §9). Every call takes
``<work copy>.lock`` (``fcntl.flock``), so threads and processes sharing ``work_dir`` take turns;
writers on other machines are handled by the push itself.

An update fetches ``refs/heads/*`` into ``refs/remotes/origin/*``, hands the plan the tree at
``refs/remotes/origin/<branch>``, builds the new tree with ``TreeBuilder`` (no index, no work
tree) and pushes ``<new commit>:refs/heads/<branch>`` without force. Nothing local moves before
the push succeeds, so an interrupted update leaves only unreferenced objects. A refused or failed
push is followed by a fetch: a remote that cannot be fetched is down (``ServiceUnavailableError``);
a head that moved means a race (re-plan on it); a head equal to the new commit means the push
landed although its answer was lost; a head that did not move means the remote refuses us
(``ServiceUnavailableError`` with its reason, retried later by the caller).

**Credentials and SSH host keys** (``GitCredentials`` from ``FORGE_GITOPS__USERNAME``/``__PASSWORD`` for HTTPS
and ``__SSH_KEY``/``__SSH_KEY_PASSPHRASE``/``__SSH_USER`` for SSH; host keys checked against
``FORGE_GITOPS__SSH_KNOWN_HOSTS``, unset: ``$HOME/.ssh/known_hosts``) work as ``forge.adapters._git_remote_auth``
says, on every fetch and push. A refused login stops the operation with ``AuthenticationError`` (``gitops:
<remote>: authentication failed (fetch from the remote): …``, one line, never the secret), a refused host key with
``AuthenticationError`` code ``host_key_rejected`` (``gitops: <remote>: host key verification failed (fetch from
the remote): <why, naming the host>``), an unreadable known_hosts file with ``InvalidInputError`` naming the file
and the line: all permanent, so a deployment fails at once instead of retrying; nothing was pushed. Messages and
``url`` drop an HTTP(S) URL's user info and any URL's password.

Every call goes through the ``gitops`` circuit breaker (``forge.adapters._breakers``), which counts
``ServiceUnavailableError`` only (a branch that kept moving is contention, not an outage): a remote
that cannot be fetched or refuses pushes is left alone until its probe, and calls fail fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import urlparse

import pygit2
from pygit2.enums import FileMode

from forge.adapters._breakers import CircuitBreaker
from forge.adapters._git_remote_auth import AuthCallbacks, GitCredentials, GitRemote
from forge.adapters._pygit2_host_keys import HostTrust
from forge.adapters._pygit2_local import fetch_source, locked
from forge.errors import InvalidInputError, ServiceUnavailableError, TransientError
from forge.ports.gitops import GitOpsCommit, GitOpsEdit, GitOpsFiles, GitOpsTree, PathRevision
from forge.settings import GitOpsSettings

__all__ = ["Pygit2GitOps"]

_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_SETTINGS = "FORGE_GITOPS"


class _Tree:
    """:class:`GitOpsTree` over a pygit2 commit (or nothing, for a branch not created yet)."""

    def __init__(self, repo: pygit2.Repository, commit: pygit2.Commit | None):
        self._repo = repo
        self._commit = commit

    @property
    def commit(self) -> str | None:
        return str(self._commit.id) if self._commit is not None else None

    def read(self, path: str) -> bytes | None:
        if self._commit is None:
            return None
        return _blob_at(self._repo, self._commit.tree, path)


class _Callbacks(AuthCallbacks):
    """``AuthCallbacks`` naming the ``FORGE_GITOPS__*`` settings, recording the remote's rejection of a reference
    update (a server-side refusal is not an exception)."""

    def __init__(self, credentials: GitCredentials, trust: HostTrust | None = None) -> None:
        super().__init__(credentials, trust, settings=_SETTINGS)
        self.rejected: str | None = None

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected = f"{refname}: {message}"


class Pygit2GitOps:
    """One branch of one GitOps remote; pygit2 runs in ``asyncio.to_thread``."""

    def __init__(
        self,
        url: str,
        work_dir: Path,
        *,
        branch: str = "main",
        author_name: str = "Catalyst Forge",
        author_email: str = "forge@catalyst.invalid",
        attempts: int = 5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        breaker: CircuitBreaker | None = None,
        credentials: GitCredentials | None = None,
        known_hosts: Path | None = None,
    ):
        if not _BRANCH.match(branch) or ".." in branch or branch.endswith((".lock", "/")):
            raise InvalidInputError(f"gitops branch: not a branch name: {branch!r}")
        if attempts < 1:
            raise InvalidInputError("gitops push attempts must be at least 1")
        self._remote = GitRemote(url, credentials or GitCredentials(), known_hosts, label="gitops", settings=_SETTINGS)
        self._shown = self._remote.shown
        self._source = fetch_source(url)
        self._branch = branch
        self._signature = (author_name, author_email)
        self._attempts = attempts
        self._clock = clock
        self._breaker = breaker or CircuitBreaker("gitops", counts=(ServiceUnavailableError,))
        digest = hashlib.sha256(self._source.encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(urlparse(url).path or url).name.removesuffix(".git")) or "gitops"
        self.path = work_dir / f"{name}-{digest}.git"

    @classmethod
    def from_settings(cls, settings: GitOpsSettings, *, clock: Callable[[], datetime] | None = None) -> Pygit2GitOps:
        if not settings.url:
            raise InvalidInputError("FORGE_GITOPS__URL is not set: there is no GitOps repository to deploy to")
        extra = {"clock": clock} if clock is not None else {}
        return cls(
            settings.url,
            settings.work_dir,
            branch=settings.branch,
            author_name=settings.author_name,
            author_email=settings.author_email,
            attempts=settings.push_attempts,
            breaker=CircuitBreaker.from_settings("gitops", settings.breaker, counts=(ServiceUnavailableError,)),
            credentials=GitCredentials.from_settings(settings),
            known_hosts=settings.ssh_known_hosts,
            **extra,
        )

    @property
    def url(self) -> str:
        """The remote as configured, without user info (credentials belong in ``GitCredentials``)."""
        return self._shown

    @property
    def branch(self) -> str:
        return self._branch

    async def update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        return await self._call(self._locked_call, self._update, plan)

    async def read(self, paths: Sequence[str]) -> GitOpsFiles:
        return await self._call(self._locked_call, self._read, list(paths))

    async def history(self, path: str, *, limit: int = 50) -> list[PathRevision]:
        return await self._call(self._locked_call, self._history, path, limit)

    async def contains(self, revision: str, commit: str) -> bool:
        """``revision`` is ``commit`` or a descendant (``forge.ports.deployer.RevisionHistory``); fetches when
        either is not in the work copy yet; False for a revision that is not a commit the remote has."""
        return await self._call(self._locked_call, self._contains, revision, commit)

    async def _call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        async with self._breaker:
            return await asyncio.to_thread(fn, *args, **kwargs)

    # -- in the worker thread, under the work copy's lock --------------------------------------

    def _locked_call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with locked(self.path.with_name(self.path.name + ".lock")):
            return fn(*args, **kwargs)

    def _update(self, plan: Callable[[GitOpsTree], GitOpsEdit | None]) -> GitOpsCommit:
        repo = self._open()
        for attempt in range(1, self._attempts + 1):
            head = self._fetch(repo)
            edit = plan(_Tree(repo, head))
            if edit is None:
                return GitOpsCommit(str(head.id) if head is not None else None, changed=False, attempts=attempt)
            tree_id = _apply(repo, head.tree if head is not None else None, edit.files)
            if head is not None and tree_id == head.tree_id:
                return GitOpsCommit(str(head.id), changed=False, attempts=attempt)
            signature = self._now_signature()
            parents = [head.id] if head is not None else []
            new = repo.create_commit(None, signature, signature, edit.message, tree_id, parents)
            if self._push(repo, head, new):
                repo.references.create(self._tracking, new, force=True)
                return GitOpsCommit(str(new), changed=True, attempts=attempt)
        raise TransientError(
            f"gitops: {self._shown} branch {self._branch} kept moving; the change was re-applied "
            f"{self._attempts} times without a successful push",
            details={"url": self._shown, "branch": self._branch, "attempts": self._attempts},
        )

    def _push(self, repo: pygit2.Repository, head: pygit2.Commit | None, new: pygit2.Oid) -> bool:
        """True when the remote's branch is now ``new``; False when it moved under us (re-plan)."""
        outcome = self._callbacks()
        failure: str | None
        try:
            with self._remote.translated("push to", self._hidden):
                repo.remotes["origin"].push([f"{new}:refs/heads/{self._branch}"], callbacks=outcome)
            failure = outcome.rejected
        except pygit2.GitError as exc:
            failure = self._remote.scrub(str(exc), self._hidden)
        if failure is None:
            return True
        now = self._fetch(repo)
        if now is not None and now.id == new:
            return True  # it landed; only the answer was lost
        if (now.id if now is not None else None) != (head.id if head is not None else None):
            return False
        raise ServiceUnavailableError(
            f"gitops: {self._shown} refused the push to {self._branch}: {failure}",
            details={"url": self._shown, "branch": self._branch},
        )

    def _read(self, paths: list[str]) -> GitOpsFiles:
        repo = self._open()
        head = self._fetch(repo)
        tree = _Tree(repo, head)
        return GitOpsFiles(tree.commit, {path: tree.read(path) for path in paths})

    def _history(self, path: str, limit: int) -> list[PathRevision]:
        repo = self._open()
        commit = self._fetch(repo)
        found: list[PathRevision] = []
        while commit is not None and len(found) < limit:
            parent = commit.parents[0] if commit.parent_ids else None
            mine = _entry_id(commit.tree, path)
            before = _entry_id(parent.tree, path) if parent is not None else None
            if mine != before:
                committed_at = datetime.fromtimestamp(commit.commit_time, UTC)
                content = _blob_at(repo, commit.tree, path)
                found.append(PathRevision(str(commit.id), committed_at, commit.message, content))
            commit = parent
        return found

    def _contains(self, revision: str, commit: str) -> bool:
        if not (re.fullmatch(r"[0-9a-f]{40}", revision) and re.fullmatch(r"[0-9a-f]{40}", commit)):
            return False
        if revision == commit:
            return True
        repo = self._open()
        if revision not in repo or commit not in repo:
            self._fetch(repo)
        if revision not in repo or commit not in repo:
            return False
        return bool(repo.descendant_of(revision, commit))

    @property
    def _tracking(self) -> str:
        return f"refs/remotes/origin/{self._branch}"

    def _open(self) -> pygit2.Repository:
        if (self.path / "HEAD").exists():
            repo = pygit2.Repository(str(self.path))
            if repo.remotes["origin"].url != self._source:
                repo.remotes.set_url("origin", self._source)
            return repo
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        repo = pygit2.init_repository(str(staging), bare=True, initial_head=self._branch)
        repo.remotes.create("origin", self._source, _REFSPEC)
        staging.rename(self.path)
        return pygit2.Repository(str(self.path))

    def _fetch(self, repo: pygit2.Repository) -> pygit2.Commit | None:
        """Fetch the remote's branches; the branch's head commit, ``None`` when it does not exist yet."""
        try:
            with self._remote.translated("fetch from", self._hidden):
                origin = repo.remotes["origin"]
                origin.fetch([_REFSPEC], prune=pygit2.enums.FetchPrune.PRUNE, callbacks=self._callbacks())
        except pygit2.GitError as exc:
            raise ServiceUnavailableError(
                f"gitops: cannot fetch {self._shown}: {self._remote.scrub(str(exc), self._hidden)}",
                details={"url": self._shown},
            ) from exc
        ref = repo.references.get(self._tracking)
        return ref.peel(pygit2.Commit) if ref is not None else None

    def _callbacks(self) -> _Callbacks:
        """Callbacks for one fetch or push; for an SSH remote, with the known_hosts file read now (a
        rotated file counts from the next operation on)."""
        return _Callbacks(self._remote.credentials, self._remote.trust())

    @property
    def _hidden(self) -> dict[str, str]:
        """The work copy's path is nobody's business."""
        return {str(self.path): "<work copy>"}

    def _now_signature(self) -> pygit2.Signature:
        now = self._clock()
        offset = now.utcoffset()
        minutes = int(offset.total_seconds() // 60) if offset is not None else 0
        return pygit2.Signature(self._signature[0], self._signature[1], int(now.timestamp()), minutes)


def _check_path(path: str) -> list[str]:
    parts = path.split("/")
    if not path or any(not _SEGMENT.match(p) or p in {".", ".."} or p.lower() == ".git" for p in parts):
        raise InvalidInputError(f"gitops: refusing to write the path {path!r}")
    return parts


def _apply(repo: pygit2.Repository, base: pygit2.Tree | None, files: Mapping[str, bytes | None]) -> pygit2.Oid:
    nested: dict[str, object] = {}
    for path, content in files.items():
        *dirs, leaf = _check_path(path)
        node = nested
        for name in dirs:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise InvalidInputError(f"gitops: {path}: a parent directory is also written as a file")
            node = child
        if isinstance(node.get(leaf), dict):
            raise InvalidInputError(f"gitops: {path}: is also a parent directory of another written path")
        node[leaf] = content
    return _write_tree(repo, base, nested)


def _write_tree(repo: pygit2.Repository, base: pygit2.Tree | None, changes: Mapping[str, object]) -> pygit2.Oid:
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    for name, content in changes.items():
        existing = builder.get(name)
        if isinstance(content, dict):
            sub_base = (
                repo[existing.id].peel(pygit2.Tree)
                if existing is not None and existing.filemode == FileMode.TREE
                else None
            )
            sub_id = _write_tree(repo, sub_base, content)
            if len(repo[sub_id].peel(pygit2.Tree)) == 0:
                if existing is not None:
                    builder.remove(name)
                continue
            builder.insert(name, sub_id, FileMode.TREE)
        elif content is None:
            if existing is not None:
                builder.remove(name)
        else:
            assert isinstance(content, bytes)
            builder.insert(name, repo.create_blob(content), FileMode.BLOB)
    return builder.write()


def _entry_id(tree: pygit2.Tree, path: str) -> pygit2.Oid | None:
    try:
        return tree[path].id
    except KeyError:
        return None


def _blob_at(repo: pygit2.Repository, tree: pygit2.Tree, path: str) -> bytes | None:
    try:
        entry = tree[path]
    except KeyError:
        return None
    obj = repo[entry.id]
    return obj.data if isinstance(obj, pygit2.Blob) else None

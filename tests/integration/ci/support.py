"""Repositories and jobs for the CI worker tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

import pygit2
from pygit2.enums import FileMode

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.pygit2_git import Pygit2Mirrors
from forge.domain.messages import CiPayload, Job, JobType
from forge.embedded.process import ServiceProcess, binary, start_service
from forge.ports import GitReader, ObjectInfo
from forge.settings import ObjectStoreSettings, WorkerSettings

FAST = WorkerSettings(concurrency=2, ack_wait=2.0, heartbeat=0.5, max_deliver=2, fetch_wait=0.2)

_SIG = pygit2.Signature("Forge Tests", "tests@forge.invalid", 1_700_000_000, 0)


def make_repo(path: Path, files: Mapping[str, tuple[int, bytes]]) -> str:
    """A bare repository whose one commit holds ``files`` (path -> (FileMode, content)); its sha."""
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    nested: dict[str, Any] = {}
    for name, entry in files.items():
        *dirs, leaf = name.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = entry

    def write(node: dict[str, Any]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                builder.insert(name, write(value), FileMode.TREE)
            else:
                mode, data = value
                builder.insert(name, repo.create_blob(data), mode)
        return builder.write()

    return str(repo.create_commit("refs/heads/main", _SIG, _SIG, "init", write(nested), []))


def standard_repo(path: Path) -> str:
    return make_repo(
        path,
        {
            "README.md": (FileMode.BLOB, b"root\n"),
            "svc/data.txt": (FileMode.BLOB, b"payload\n"),
            "svc/tool.sh": (FileMode.BLOB_EXECUTABLE, b"#!/bin/sh\necho tool ran\n"),
            "svc/link": (FileMode.LINK, b"data.txt"),
        },
    )


def ci_job(
    clone_url: str,
    sha: str,
    target: str,
    *,
    step: str = "unit",
    action: Literal["run", "earthly"] = "run",
    project_path: str = "svc",
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
    granted: list[str] | None = None,
    timeout_seconds: int = 60,
    retries: int = 0,
    attempt: int = 0,
    step_execution_id: UUID | None = None,
    run_id: UUID | None = None,
) -> Job:
    run = run_id or uuid4()
    payload = CiPayload(
        clone_url=clone_url,
        phase="test",
        project="svc",
        project_path=project_path,
        step=step,
        action=action,
        target=target,
        args=args or [],
        env=env or {},
        secrets=secrets or [],
        granted_secrets=(secrets or []) if granted is None else granted,  # None: the repository was granted them
        timeout_seconds=timeout_seconds,
        retries=retries,
        attempt=attempt,
        step_execution_id=step_execution_id,
    )
    return Job(
        key=f"ci.{run}.test.svc.{step}.{attempt}",
        type=JobType.CI,
        run_id=run,
        repository="acme/mono",
        commit_sha=sha,
        payload=payload,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )


async def wait_for(path: Path, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


@dataclass
class CountingObjects:
    """The real object store, counting calls per method for keys (or prefixes) under ``scope``."""

    inner: MinioObjectStore
    scope: str = ""
    calls: Counter[str] = field(default_factory=Counter)

    def _count(self, method: str, key: str) -> None:
        if key.startswith(self.scope):
            self.calls[method] += 1

    async def ensure_bucket(self) -> None:
        await self.inner.ensure_bucket()

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        self._count("put", key)
        return await self.inner.put(key, data, content_type=content_type)

    async def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        self._count("put", key)  # a write of the whole object, as put
        return await self.inner.put_file(key, path, content_type=content_type)

    async def get(self, key: str) -> bytes:
        self._count("get", key)
        return await self.inner.get(key)

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        self._count("get", key)
        return await self.inner.get_file(key, path)

    async def stat(self, key: str) -> ObjectInfo:
        self._count("stat", key)
        return await self.inner.stat(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self._count("list", prefix)
        return await self.inner.list(prefix)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await self.inner.delete(key)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        return await self.inner.presign_get(key, expires)

    async def ping(self) -> None:
        await self.inner.ping()


@dataclass
class CountingMirrors:
    """Real mirrors, counting how often a commit is written out of one."""

    inner: Pygit2Mirrors
    checkouts: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds a checkout takes longer, so concurrent jobs overlap

    async def sync(self, repository: str, url: str, *, want: str | None = None) -> GitReader:
        return await self.inner.sync(repository, url, want=want)

    async def open(self, repository: str) -> GitReader:
        return await self.inner.open(repository)

    async def checkout(self, repository: str, commit: str, dest: Path) -> None:
        self.checkouts.append(commit)
        await asyncio.sleep(self.delay)
        await self.inner.checkout(repository, commit, dest)


def step_processes(token: str) -> list[int]:
    """Pids of live processes (not zombies) whose command line contains ``token``, seen from the host."""
    found = []
    wanted = token.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in cmdline and b"pytest" not in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def worker_process(name: str, env: dict[str, str], logs: Path) -> ServiceProcess:
    """A ``forge-worker ci`` process with ``env``, logging to ``<logs>/<name>.log``."""
    return start_service(
        name, [binary("forge-worker"), "ci"], url="", ready=lambda: True, log=logs / f"{name}.log", env=env
    )


def worker_env(tmp_path: Path, nats_url: str, object_settings: ObjectStoreSettings) -> dict[str, str]:
    """A CI worker process's settings for tests: fast redelivery and heartbeats, no sandbox (steps write
    pids, flags and counts outside their checkouts)."""
    return {
        "FORGE_NATS__URL": nats_url,
        "FORGE_OBJECTS__ENDPOINT": object_settings.endpoint,
        "FORGE_OBJECTS__ACCESS_KEY": object_settings.access_key,
        "FORGE_OBJECTS__SECRET_KEY": object_settings.secret_key.get_secret_value(),
        "FORGE_OBJECTS__BUCKET": object_settings.bucket,
        "FORGE_GIT__CACHE_DIR": str(tmp_path / "git-cache"),
        "FORGE_CI__WORK_DIR": str(tmp_path / "work"),
        "FORGE_WORKER__ACK_WAIT": "2",
        "FORGE_WORKER__HEARTBEAT": "0.5",
        "FORGE_WORKER__FETCH_WAIT": "0.2",
        "FORGE_CI__LOG_INTERVAL": "0.2",
        "FORGE_CI__SANDBOX": "off",
    }

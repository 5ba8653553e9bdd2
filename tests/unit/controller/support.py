"""What the controller unit tests share: background services, polling, and small test doubles.

Everything runs in memory (``MemoryStore``, ``MemoryBus``, ``MemoryEngine``): no sockets, no
processes. Waits are event driven (``until`` polls a condition) and bounded generously with
``asyncio.timeout``; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import md5
from pathlib import Path
from typing import Any
from uuid import UUID

from forge.controller.reconcile import Reconciler
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun
from forge.domain.events import StepEvent
from forge.domain.status import Status
from forge.errors import ForgeError, NotFoundError, TransientError
from forge.ports import ObjectInfo
from forge.ports.fakes import MemoryStore
from forge.ports.store import NewRepository, NewRun
from forge.testing.discoveries import LIB_AND_APP_STEPS, lib_and_app

__all__ = [
    "ATTEMPTS",
    "CLONE_URL",
    "REPO",
    "SHA",
    "STEPS",
    "WITHIN",
    "DictObjects",
    "Observed",
    "ObservedStore",
    "Running",
    "discovered_run",
    "discovery",
    "pending_run",
    "running",
    "steps_of",
    "until",
]

#: stamina's attempts in testing mode (see conftest.py): far more than any test retries.
ATTEMPTS = 1_000_000
#: The generous upper bound of every wait; a test that needs it has failed.
WITHIN = 10.0

REPO = "acme/mono"
CLONE_URL = "https://git.example.com/acme/mono.git"
SHA = "c0ffee" + "0" * 34
#: ``phase/project/step`` of every step of :func:`discovery`.
STEPS = LIB_AND_APP_STEPS


# -- waiting ------------------------------------------------------------------------------------------


async def until(
    check: Callable[[], bool | Awaitable[bool]], *, task: asyncio.Task[Any] | None = None, within: float = WITHIN
) -> None:
    """Poll ``check()`` until true; fail at once when ``task`` (the code under test) ended."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            if task is not None and task.done():
                task.result()  # raises what ended it
                raise AssertionError("the code under test stopped before it was told to")
            await asyncio.sleep(0.002)


@dataclass
class Running:
    """Services running in the background until the ``running`` block ends."""

    task: asyncio.Task[None]
    stop: asyncio.Event

    async def until(self, check: Callable[[], bool | Awaitable[bool]], *, within: float = WITHIN) -> None:
        await until(check, task=self.task, within=within)


@contextlib.asynccontextmanager
async def running(*services: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> AsyncIterator[Running]:
    """Run each ``service(stop)`` side by side; at the end set ``stop`` and wait for all of them."""
    stop = asyncio.Event()

    async def together() -> None:
        async with asyncio.TaskGroup() as group:
            for service in services:
                group.create_task(service(stop))

    task = asyncio.create_task(together())
    try:
        yield Running(task, stop)
    finally:
        stop.set()
        async with asyncio.timeout(WITHIN):
            await task  # re-raises whatever crashed a service


# -- test doubles -------------------------------------------------------------------------------------


class Observed:
    """A reconciler as the loop sees it, counting how its calls ended (the loop is unchanged)."""

    def __init__(self, inner: Reconciler) -> None:
        self.inner = inner
        self.name = inner.name
        self.transient: list[TransientError] = []  # raised by reconcile, in order
        self.returned: list[UUID] = []  # reconciles that returned
        self.failed: list[tuple[UUID, ForgeError]] = []  # fail() calls that returned

    async def resume(self) -> Sequence[UUID]:
        return await self.inner.resume()

    async def claim(self) -> Sequence[UUID]:
        return await self.inner.claim()

    async def interrupts(self) -> Sequence[UUID]:
        return await self.inner.interrupts()

    async def reconcile(self, run_id: UUID) -> None:
        try:
            await self.inner.reconcile(run_id)
        except TransientError as exc:
            self.transient.append(exc)
            raise
        self.returned.append(run_id)

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        await self.inner.fail(run_id, error)
        self.failed.append((run_id, error))


class ObservedStore(MemoryStore):
    """``MemoryStore`` counting some calls; ``apply_step_events`` may be held behind ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.apply_calls = 0  # every call, failed ones included
        self.applied: list[list[StepEvent]] = []  # the batches that were applied (committed)
        self.set_workflow_calls = 0  # every call, failed ones included
        self.renew_calls = 0  # renew_execution_claims: every call, failed ones included

    async def set_workflow(self, run_id: UUID, workflow_name: str, *, replaces: str | None = None) -> PipelineRun:
        self.set_workflow_calls += 1
        return await super().set_workflow(run_id, workflow_name, replaces=replaces)

    async def renew_execution_claims(self, run_ids: Sequence[UUID], *, claimer: str) -> set[UUID]:
        self.renew_calls += 1
        return await super().renew_execution_claims(run_ids, claimer=claimer)

    async def apply_step_events(self, events: Sequence[StepEvent]) -> int:
        self.apply_calls += 1
        await self.gate.wait()
        changed = await super().apply_step_events(events)
        self.applied.append(list(events))
        return changed


class DictObjects:
    """An ``ObjectStore`` in a dict: enough for what the discovery path reads and writes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    async def ensure_bucket(self) -> None:
        return None

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        self.objects[key] = data
        return await self.stat(key)

    async def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        return await self.put(key, await asyncio.to_thread(path.read_bytes), content_type=content_type)

    async def get(self, key: str) -> bytes:
        self.reads.append(key)
        if key not in self.objects:
            raise NotFoundError(f"object {key!r} does not exist")
        return self.objects[key]

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        await asyncio.to_thread(path.write_bytes, await self.get(key))
        return await self.stat(key)

    async def stat(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise NotFoundError(f"object {key!r} does not exist")
        data = self.objects[key]
        return ObjectInfo(key, len(data), md5(data, usedforsecurity=False).hexdigest(), datetime.now(UTC))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return [await self.stat(key) for key in sorted(self.objects) if key.startswith(prefix)]

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        return f"memory://objects/{key}?expires={int(expires.total_seconds())}"

    async def ping(self) -> None:
        return None


# -- runs -----------------------------------------------------------------------------------------------


def discovery(*, affected: bool = True) -> DiscoveryResult:
    return lib_and_app(SHA, REPO, affected=affected)


async def pending_run(store: MemoryStore, sha: str = SHA) -> PipelineRun:
    """A new run, as ``forge run`` leaves it: pending, discovery pending."""
    await store.register_repository(NewRepository(REPO, CLONE_URL))
    run, created = await store.create_run(NewRun(repository=REPO, commit_sha=sha, branch="main"))
    assert created
    return run


async def discovered_run(store: MemoryStore, found: DiscoveryResult | None = None) -> PipelineRun:
    """A run whose discovery succeeded, as the discovery reconciler leaves it."""
    run = await pending_run(store)
    assert [r.id for r in await store.claim_discovery(limit=10)] == [run.id]
    return await store.record_discovery(run.id, found or discovery(), f"pipeline-runs/{run.id}/discovery.json")


async def steps_of(store: MemoryStore, run_id: UUID) -> dict[str, tuple[Status, str | None]]:
    """``phase/project/step`` → (status, message) of every step of the run."""
    ex = await store.get_executions(run_id)
    status = {s.id: s.status for s in ex.steps}
    return {"/".join(key): (status[sid], ex.detail(sid).message) for key, sid in ex.step_ids().items()}

"""CI jobs: one step of one project in one phase, run in a fresh checkout (DESIGN §1, §6).

For a job: sync the mirror, make sure the commit's shared tree exists (written once per commit
into ``<work_dir>/trees/``, ``forge.workflows.workers.trees``), copy it into the job's private
``<work_dir>/<job id>``, run the step in ``<checkout>/<project_path>`` with its output streamed to
``log_key(run, phase, project, step)``, publish its lifecycle events (``forge.domain.events``),
remove the private copy (always).

A first delivery of a first attempt costs its log one object write when the step ends before
the first upload; only a redelivery (an earlier worker died mid-step) or a retry attempt looks
for what an earlier run of the step left in the store, and takes it over (``LogWriter.take_over``:
the earlier log, then, for a redelivery, one ``forge:`` line marking the boundary), so a follow
across a retry or a worker kill shows each run once and equals the final log.

Once the step's process has exited and its output is read, the step is *settled*
(``settling.settle``: its result, its log checkpoint and its final event, in one publish) before
the log is closed and the event published; a delivery that finds it settled (this worker died in
between) runs ``resume``: the log sealed from the checkpoint, the event published, no step run.

Events: ``started`` goes out once the step has run for ``CiSettings.started_event_after`` seconds
(a shorter step reports only its outcome, which implies it started), then one of ``success``,
``failed`` or ``retrying``. Attempts follow Argo's ``retryStrategy``: a failed attempt that is not
the last is ``retrying`` (the step stays ``running`` with its exit code and attempt recorded)
because Argo dispatches the job again with ``attempt + 1``; only the last failed attempt is
``failed``. The final event is stored on JetStream before the job's result, so the controller
records every outcome the dispatcher sees. A failed step is a
``PermanentError(code="step_failed")``, so the runtime publishes a failed result at once instead
of retrying at the JetStream level; an unreachable repository is a ``TransientError`` and is
retried there.

The step's environment is built from scratch: ``PATH``, ``HOME``, ``LANG`` (plus
``CiSettings.pass_env``) from the worker, ``CI=true`` and ``FORGE_*`` context, the step's
``env``, then its secrets under their own names: only those its repository was granted
(``CiPayload.granted_secrets``; a step naming another fails before it starts, as one whose secret
is missing does). Secret values are masked in the log. The step
runs in the worker's sandbox (``forge.workflows.workers.sandbox``: namespaces, a uid per run, or
none), which is decided once when the handler is built and said in the log.

An attempt logs at most ``CiSettings.log_limit`` bytes: past it one marker line is written, the rest
of the output is read and dropped (not masked, not kept), and the step runs on to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shlex
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forge.adapters.env_secrets import GrantedSecrets
from forge.domain.events import EventKind, StepEvent
from forge.domain.messages import CiPayload, Job
from forge.errors import ForgeError, InvalidInputError, PermanentError
from forge.jobs.events import StepEventPublisher
from forge.logs import LogCheckpoint, LogWriter, StoredLog, log_key, seal
from forge.ports import GitMirrors, ObjectStore, SecretProvider
from forge.settings import CiSettings
from forge.workflows.workers.executors import (
    EXIT_NOT_FOUND,
    SecretMasker,
    Sink,
    StepOutcome,
    StepProcess,
    earthly_argv,
    execute,
    run_argv,
)
from forge.workflows.workers.runtime import delivery
from forge.workflows.workers.sandbox import Sandbox, hand_over, resolve
from forge.workflows.workers.settling import settle, settles
from forge.workflows.workers.trees import TreeCache, private_copy, remove_tree

__all__ = ["CiHandler", "Finish"]

log = logging.getLogger("forge.worker.ci")

_BASE_ENV = ("PATH", "HOME", "LANG")

Finish = Callable[[Path, Sink], Awaitable[dict[str, Any]]]
"""Work after a successful step, in its directory, writing to its log: returns data for the job's result."""


@dataclass
class CiHandler:
    mirrors: GitMirrors
    objects: ObjectStore
    secrets: SecretProvider
    settings: CiSettings
    events: StepEventPublisher | None = None  # None: nothing reports (jobs without step_execution_id never do)
    environ: Mapping[str, str] | None = None  # the worker environment steps inherit from; None: os.environ
    _trees: TreeCache = field(init=False, repr=False)
    _sandbox: Sandbox = field(init=False, repr=False)

    def __post_init__(self) -> None:
        work = self.settings.work_dir.resolve()
        self._trees = TreeCache(work / "trees", keep=self.settings.tree_cache)
        self._sandbox = resolve(self.settings)  # said once, at worker start
        if self._sandbox.uid(uuid.UUID(int=0)) is not None:  # steps of other uids: no listing, no shared trees
            (work / "trees").mkdir(parents=True, exist_ok=True)
            work.chmod(0o711)
            (work / "trees").chmod(0o700)

    async def __call__(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        if not isinstance(payload, CiPayload):
            raise InvalidInputError(f"job {job.key} carries a {payload.type} payload, not ci")
        return await self.run_step(job, payload)

    async def run_step(self, job: Job, payload: CiPayload, finish: Finish | None = None) -> dict[str, Any]:
        """Run ``payload``'s step in a private checkout of the job's commit; ``finish`` (when given) then
        runs in the step's directory before the outcome is reported (an artifact's publishing)."""
        await self.mirrors.sync(job.repository, payload.clone_url, want=job.commit_sha)
        checkout = self.settings.work_dir.resolve() / str(job.id)
        if os.path.lexists(checkout):  # noqa: ASYNC240 - one lstat: a redelivered job starts clean, in a thread
            await asyncio.to_thread(remove_tree, checkout)
        try:
            await self._checkout(job, checkout, self._sandbox.uid(job.run_id))
            return await self._run(job, payload, checkout, finish)
        finally:
            await asyncio.to_thread(remove_tree, checkout)

    async def _checkout(self, job: Job, checkout: Path, uid: int | None) -> None:
        """The job's private copy of the commit's shared tree (written from the mirror when missing), handed to
        the step's ``uid`` (``None``: the worker's own) in the copy's thread."""

        async def materialise(dest: Path) -> None:
            await self.mirrors.checkout(job.repository, job.commit_sha, dest)

        name = f"{job.commit_sha}@{job.repository.replace('/', '+')}"  # sync checked owner/repo
        async with self._trees.use(name, materialise) as tree:
            await private_copy(tree, checkout, None if uid is None else functools.partial(hand_over, uid=uid))

    async def _run(self, job: Job, payload: CiPayload, checkout: Path, finish: Finish | None) -> dict[str, Any]:
        attempt = payload.attempt + 1
        key = log_key(job.run_id, payload.phase, payload.project, payload.step)
        started = time.monotonic()
        began = datetime.now(UTC)
        writer = await self._open_log(key, payload.attempt)
        announce = asyncio.ensure_future(self._report_started(job, payload, attempt, key, began))  # awaited below

        produced: dict[str, Any] = {}
        try:
            values, missing = await self._resolve_secrets(job, payload)
            masker = SecretMasker(values.values())
            sink = _masked_sink(writer, masker)
            async with _flushing(writer, self.settings.log_interval):
                await sink(_header(job, payload, attempt).encode())
                if missing:
                    outcome = await _not_started(sink, missing)
                else:
                    outcome = await self._execute(job, payload, checkout, values, sink)
                if outcome.success and finish is not None:
                    outcome, produced = await _finished(finish, checkout / payload.project_path, sink)
                tail = masker.flush()
                if tail:
                    await writer.write(tail)
            data = {
                "exit_code": outcome.exit_code,
                "logs_key": key,
                "duration_seconds": round(time.monotonic() - started, 3),
                "attempt": attempt,
                **produced,
            }
            event, failure = self._conclude(job, payload, outcome, data, began)
            if settles():  # the outcome is kept before the log and the event: a redelivery finishes them
                resume = _Resume(logs_key=key, log=await writer.checkpoint(), event=event)
                await settle(data if failure is None else failure, resume.as_json())
            await writer.close()
        finally:
            await writer.release()  # a closed writer has nothing left; a cancelled one leaves no spool file
            if not announce.done():  # a short step: its outcome says it started
                announce.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announce

        if event is not None and self.events is not None:
            await self.events.publish(event)
        if failure is not None:
            raise failure
        return data

    def _conclude(
        self, job: Job, payload: CiPayload, outcome: StepOutcome, data: dict[str, Any], began: datetime
    ) -> tuple[StepEvent | None, PermanentError | None]:
        """The step's final event (success, failed, or retrying when an attempt follows) and, when it did not
        succeed, the error the job ends with."""
        attempt, total = payload.attempt + 1, payload.retries + 1
        kind: EventKind
        message: str | None = outcome.message
        if outcome.success:
            kind, message = "success", None
        elif payload.attempt >= payload.retries:
            kind = "failed"
        else:  # Argo dispatches attempt + 1; the step stays running until then
            kind, message = "retrying", f"attempt {attempt} of {total} failed: {outcome.message}; retrying"
        event = self._event(
            job,
            payload,
            kind,
            attempt=attempt,
            exit_code=outcome.exit_code,
            logs_key=data["logs_key"],
            message=message,
            started_at=began,
        )
        if outcome.success:
            return event, None
        step = f"{payload.phase}/{payload.project}/{payload.step}"
        failure = PermanentError(
            f"step {step} (attempt {attempt} of {total}) {outcome.message}", code="step_failed", details=data
        )
        return event, failure

    async def resume(self, job: Job, state: dict[str, Any]) -> None:
        """Finish a step a dead worker settled (``settling.settle``): complete its log from the checkpoint and
        publish its final event; the step does not run again."""
        resumed = _Resume.from_json(state)
        await seal(self.objects, resumed.logs_key, resumed.log)
        if resumed.event is not None and self.events is not None:
            await self.events.publish(resumed.event)
        await asyncio.to_thread(remove_tree, self.settings.work_dir.resolve() / str(job.id))  # the dead one's copy

    async def _execute(
        self, job: Job, payload: CiPayload, checkout: Path, secrets: Mapping[str, str], sink: Sink
    ) -> StepOutcome:
        cwd = (checkout / payload.project_path).resolve()
        if not cwd.is_relative_to(checkout) or not cwd.is_dir():
            return await _not_started(
                sink, f"project path {payload.project_path!r} is not a directory at {job.commit_sha}"
            )
        env = self._environment(job, payload, checkout, secrets)
        if payload.action == "earthly":
            earthly = shutil.which("earthly", path=env["PATH"])
            if earthly is None:
                message = f"executable 'earthly' not found on PATH ({env['PATH']})"
                await sink(f"forge: {message}\n".encode())
                return StepOutcome(EXIT_NOT_FOUND, message)
            argv = earthly_argv(
                earthly, payload.target, payload.args, secrets=payload.secrets, flags=self.settings.earthly_flags
            )
        else:
            argv = run_argv(payload.target, payload.args)
        await sink(f"$ {shlex.join(argv) if payload.action == 'earthly' else argv[-1]}\n".encode())
        argv = self._sandbox.wrap(argv, run_id=job.run_id, checkout=checkout, cwd=cwd)
        user = self._sandbox.user(job.run_id)
        process = StepProcess(argv=argv, cwd=cwd, env=env, timeout=payload.timeout_seconds, user=user)
        return await execute(process, sink, kill_grace=self.settings.kill_grace)

    def _environment(self, job: Job, payload: CiPayload, checkout: Path, secrets: Mapping[str, str]) -> dict[str, str]:
        environ = os.environ if self.environ is None else self.environ
        env = {name: environ[name] for name in (*_BASE_ENV, *self.settings.pass_env) if name in environ}
        env.setdefault("PATH", os.defpath)
        env.setdefault("HOME", str(checkout))
        if self._sandbox.mode != "off":  # the worker's HOME is not the step's
            env["HOME"] = self._sandbox.home(checkout)
        env.setdefault("LANG", "C.UTF-8")
        env.update(
            CI="true",
            FORGE_RUN_ID=str(job.run_id),
            FORGE_JOB_ID=str(job.id),
            FORGE_REPOSITORY=job.repository,
            FORGE_COMMIT_SHA=job.commit_sha,
            FORGE_PHASE=payload.phase,
            FORGE_PROJECT=payload.project,
            FORGE_PROJECT_PATH=payload.project_path,
            FORGE_STEP=payload.step,
            FORGE_ATTEMPT=str(payload.attempt + 1),
            FORGE_WORKSPACE=str(checkout),
        )
        env.update(payload.env)
        env.update(secrets)
        return env

    async def _resolve_secrets(self, job: Job, payload: CiPayload) -> tuple[dict[str, str], str | None]:
        """Values by name, and a message naming every secret that could not be resolved: one the repository
        was not granted (or a platform name) is never looked up."""
        granted = GrantedSecrets(self.secrets, payload.granted_secrets, repository=job.repository)
        values: dict[str, str] = {}
        problems: list[str] = []
        for name in payload.secrets:
            try:
                values[name] = await granted.get(name)
            except PermanentError as exc:
                problems.append(exc.message)
        return values, "; ".join(problems) or None

    async def _open_log(self, key: str, attempt: int) -> LogWriter:
        """The attempt's log writer. A first delivery of a first attempt writes a new log (nothing can be
        stored: no listing). A retry attempt or a redelivery takes over what is stored (``LogWriter.take_over``):
        the earlier attempts' complete log, or the partial log a dead worker left, then a ``forge:`` line
        marking a redelivery, all uploaded as the writer's first chunk before what it replaces is deleted;
        so a follower sees each attempt and each delivery once. Each attempt may log up to the limit: what
        was taken over (capped each) does not count."""
        settings = self.settings
        redelivered = delivery.get() > 1
        if attempt == 0 and not redelivered:
            return LogWriter(self.objects, key, interval=settings.log_interval, limit=settings.log_limit)
        stored = await StoredLog.look(self.objects, key)
        writer = LogWriter(
            self.objects,
            key,
            interval=settings.log_interval,
            limit=settings.log_limit,
            generation=stored.next_generation,
        )
        marker = _redelivery_marker(delivery.get()) if redelivered else b""
        try:
            await writer.take_over(stored, marker=marker)
        except BaseException:
            await writer.release()
            raise
        return writer

    async def _report_started(self, job: Job, payload: CiPayload, attempt: int, key: str, began: datetime) -> None:
        await asyncio.sleep(self.settings.started_event_after)
        await self._report(job, payload, "started", attempt=attempt, logs_key=key, started_at=began)

    async def _report(
        self,
        job: Job,
        payload: CiPayload,
        kind: EventKind,
        *,
        attempt: int,
        logs_key: str,
        started_at: datetime,
    ) -> None:
        """Publish one lifecycle event of the step; ``TransientError`` when NATS stays unreachable."""
        event = self._event(job, payload, kind, attempt=attempt, logs_key=logs_key, started_at=started_at)
        if event is not None and self.events is not None:
            await self.events.publish(event)

    def _event(
        self,
        job: Job,
        payload: CiPayload,
        kind: EventKind,
        *,
        attempt: int,
        logs_key: str,
        started_at: datetime,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> StepEvent | None:
        """One lifecycle event of the step; ``None`` when nothing reports (no publisher, no step execution)."""
        if self.events is None or payload.step_execution_id is None:
            return None
        return StepEvent(
            run_id=job.run_id,
            step_id=payload.step_execution_id,
            attempt=attempt,
            kind=kind,
            exit_code=exit_code,
            logs_key=logs_key,
            message=message[:4000] if message else None,
            started_at=started_at,
        )


@dataclass(frozen=True, slots=True)
class _Resume:
    """What ``CiHandler.resume`` needs of a settled step: its log's checkpoint and its final event."""

    logs_key: str
    log: LogCheckpoint
    event: StepEvent | None

    def as_json(self) -> dict[str, Any]:
        event = None if self.event is None else self.event.model_dump(mode="json")
        return {"logs_key": self.logs_key, "log": self.log.as_json(), "event": event}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Resume:
        event = None if data.get("event") is None else StepEvent.model_validate(data["event"])
        return cls(logs_key=str(data["logs_key"]), log=LogCheckpoint.from_json(data["log"]), event=event)


def _redelivery_marker(number: int) -> bytes:
    return (
        f"forge: the worker running this step stopped before the step ended; delivery {number} runs it again"
        " from the start\n"
    ).encode()


def _header(job: Job, payload: CiPayload, attempt: int) -> str:
    return (
        f"forge: {payload.phase}/{payload.project}/{payload.step} attempt {attempt} of {payload.retries + 1}"
        f" at {job.repository}@{job.commit_sha[:12]} in {payload.project_path}\n"
    )


async def _finished(finish: Finish, cwd: Path, sink: Sink) -> tuple[StepOutcome, dict[str, Any]]:
    """The step's outcome once ``finish`` ran: its failure (a ``ForgeError``) fails the step with its message."""
    try:
        produced = await finish(cwd, sink)
    except ForgeError as exc:
        await sink(f"forge: {exc.message}\n".encode())
        return StepOutcome(None, exc.message), {}
    return StepOutcome(0, ""), produced


def _masked_sink(writer: LogWriter, masker: SecretMasker) -> Sink:
    async def sink(data: bytes) -> None:
        if writer.full:  # past the limit: read and dropped, so the step keeps running
            return
        masked = masker.feed(data)
        if masked:
            await writer.write(masked)

    return sink


async def _not_started(sink: Sink, message: str) -> StepOutcome:
    await sink(f"forge: {message}; the step did not run\n".encode())
    return StepOutcome(None, message)


@contextlib.asynccontextmanager
async def _flushing(writer: LogWriter, interval: float) -> AsyncIterator[None]:
    """Upload what the step printed every ``interval`` seconds, even while it is silent."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await writer.flush()
            except ForgeError as exc:  # the next tick or close() tries again
                log.warning("log upload of %s failed: %s", writer.key, exc)

    ticker = asyncio.ensure_future(tick())  # scoped: cancelled and awaited below
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker

"""CI jobs: one step of one project in one phase, run in a fresh checkout (DESIGN §1, §6).

For a job: sync the mirror, write the commit into ``<work_dir>/<job id>``, report the step
``running``, run it in ``<checkout>/<project_path>`` with its output streamed to
``log_key(run, phase, project, step)``, report the outcome, remove the checkout (always).

Attempts follow Argo's ``retryStrategy``: a failed attempt that is not the last leaves the step
``running`` (with its exit code and attempt recorded) because Argo dispatches the job again with
``attempt + 1``; only the last failed attempt reports ``failed``. A failed step is a
``PermanentError(code="step_failed")``, so the runtime publishes a failed result at once instead
of retrying at the JetStream level; an unreachable repository is a ``TransientError`` and is
retried there.

The step's environment is built from scratch: ``PATH``, ``HOME``, ``LANG`` (plus
``CiSettings.pass_env``) from the worker, ``CI=true`` and ``FORGE_*`` context, the step's
``env``, then its secrets under their own names. Secret values are masked in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge.domain.messages import CiPayload, Job
from forge.domain.status import Status
from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from forge.logs import LogWriter, log_key
from forge.logs.reader import parts_prefix
from forge.ports import GitMirrors, ObjectStore, SecretProvider, StatusReporter
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

__all__ = ["CiHandler"]

log = logging.getLogger("forge.worker.ci")

_BASE_ENV = ("PATH", "HOME", "LANG")
_REPORT_TRIES = 3


@dataclass
class CiHandler:
    mirrors: GitMirrors
    objects: ObjectStore
    secrets: SecretProvider
    settings: CiSettings
    status: StatusReporter | None = None  # None: nothing reports (jobs without step_execution_id never do)
    environ: Mapping[str, str] | None = None  # the worker environment steps inherit from; None: os.environ

    async def __call__(self, job: Job) -> dict[str, Any]:
        payload = job.payload
        if not isinstance(payload, CiPayload):
            raise InvalidInputError(f"job {job.key} carries a {payload.type} payload, not ci")
        await self.mirrors.sync(job.repository, payload.clone_url, want=job.commit_sha)
        checkout = self.settings.work_dir.resolve() / str(job.id)
        await asyncio.to_thread(_remove, checkout)  # a redelivered job starts clean
        try:
            await self.mirrors.checkout(job.repository, job.commit_sha, checkout)
            return await self._run(job, payload, checkout)
        finally:
            await asyncio.to_thread(_remove, checkout)

    async def _run(self, job: Job, payload: CiPayload, checkout: Path) -> dict[str, Any]:
        attempt = payload.attempt + 1
        key = log_key(job.run_id, payload.phase, payload.project, payload.step)
        started = time.monotonic()
        earlier = await self._earlier_attempts(key, payload.attempt)
        await self._discard_log(key)  # an earlier delivery's partial output
        if not await self._report(payload, Status.RUNNING, attempt=attempt, logs_key=key):
            raise PermanentError(
                f"step {payload.phase}/{payload.project}/{payload.step} was not started: its run is finished "
                "or being cancelled",
                code="cancelled",
            )

        values, missing = await self._resolve_secrets(payload.secrets)
        masker = SecretMasker(values.values())
        writer = LogWriter(self.objects, key, interval=self.settings.log_interval)

        async def sink(data: bytes) -> None:
            masked = masker.feed(data)
            if masked:
                await writer.write(masked)

        async with _flushing(writer, self.settings.log_interval):
            await writer.write(earlier)  # the log of a retried step keeps every attempt, oldest first
            await sink(_header(job, payload, attempt).encode())
            if missing:
                outcome = await _not_started(sink, missing)
            else:
                outcome = await self._execute(job, payload, checkout, values, sink)
            tail = masker.flush()
            if tail:
                await writer.write(tail)
        await writer.close()

        data = {
            "exit_code": outcome.exit_code,
            "logs_key": key,
            "duration_seconds": round(time.monotonic() - started, 3),
            "attempt": attempt,
        }
        if outcome.success:
            await self._report(payload, Status.SUCCESS, exit_code=0, attempt=attempt, logs_key=key)
            return data
        total = payload.retries + 1
        if payload.attempt >= payload.retries:
            await self._report(
                payload,
                Status.FAILED,
                exit_code=outcome.exit_code,
                attempt=attempt,
                logs_key=key,
                message=outcome.message,
            )
        else:  # Argo dispatches attempt + 1; the step stays running until then
            note = f"attempt {attempt} of {total} failed: {outcome.message}; retrying"
            await self._report(
                payload, Status.RUNNING, exit_code=outcome.exit_code, attempt=attempt, logs_key=key, message=note
            )
        step = f"{payload.phase}/{payload.project}/{payload.step}"
        raise PermanentError(
            f"step {step} (attempt {attempt} of {total}) {outcome.message}", code="step_failed", details=data
        )

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
        process = StepProcess(argv=argv, cwd=cwd, env=env, timeout=payload.timeout_seconds)
        return await execute(process, sink, kill_grace=self.settings.kill_grace)

    def _environment(self, job: Job, payload: CiPayload, checkout: Path, secrets: Mapping[str, str]) -> dict[str, str]:
        environ = os.environ if self.environ is None else self.environ
        env = {name: environ[name] for name in (*_BASE_ENV, *self.settings.pass_env) if name in environ}
        env.setdefault("PATH", os.defpath)
        env.setdefault("HOME", str(checkout))
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

    async def _resolve_secrets(self, names: list[str]) -> tuple[dict[str, str], str | None]:
        """Values by name, and a message naming every secret that could not be resolved."""
        values: dict[str, str] = {}
        problems: list[str] = []
        for name in names:
            try:
                values[name] = await self.secrets.get(name)
            except PermanentError as exc:
                problems.append(exc.message)
        return values, "; ".join(problems) or None

    async def _earlier_attempts(self, key: str, attempt: int) -> bytes:
        """The complete log of the attempts before this one (nothing for a first attempt)."""
        if attempt == 0:
            return b""
        try:
            return await self.objects.get(key)
        except NotFoundError:
            return b""

    async def _discard_log(self, key: str) -> None:
        for info in await self.objects.list(parts_prefix(key)):
            await self.objects.delete(info.key)
        await self.objects.delete(key)

    async def _report(self, payload: CiPayload, status: Status, **fields: Any) -> bool:
        """Best effort: an unreachable API is logged and never fails the step. False only when the
        API refused the status as a conflict (e.g. ``running`` for a step of a cancelled run)."""
        if self.status is None or payload.step_execution_id is None:
            return True
        for attempt in range(1, _REPORT_TRIES + 1):
            try:
                await self.status.step_status(payload.step_execution_id, status, **fields)
            except TransientError as exc:
                if attempt == _REPORT_TRIES:
                    log.warning("step %s: could not report %s: %s", payload.step_execution_id, status, exc)
                    return True
                await asyncio.sleep(exc.retry_after or float(attempt))
            except ConflictError as exc:
                log.warning("step %s: %s was refused: %s", payload.step_execution_id, status, exc)
                return False
            except ForgeError as exc:
                log.warning("step %s: %s was not accepted: %s", payload.step_execution_id, status, exc)
                return True
            else:
                return True
        return True


def _header(job: Job, payload: CiPayload, attempt: int) -> str:
    return (
        f"forge: {payload.phase}/{payload.project}/{payload.step} attempt {attempt} of {payload.retries + 1}"
        f" at {job.repository}@{job.commit_sha[:12]} in {payload.project_path}\n"
    )


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


def _remove(path: Path) -> None:
    """Delete a checkout, including directories a step made read-only."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        shutil.rmtree(path)
    except OSError:
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                Path(folder).chmod(0o700)
        shutil.rmtree(path, ignore_errors=True)

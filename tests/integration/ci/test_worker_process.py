"""``forge-worker ci`` as a real process: SIGKILLed mid-step, its job is redelivered to the next worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from forge.adapters.nats_bus import NatsBus
from forge.domain.messages import STREAMS
from forge.embedded.process import ServiceProcess, binary, start_service
from forge.jobs.dispatch import dispatch
from forge.settings import ObjectStoreSettings

from .support import ci_job, read_pid, standard_repo


def _worker(name: str, env: dict[str, str], logs: Path) -> ServiceProcess:
    return start_service(
        name, [binary("forge-worker"), "ci"], url="", ready=lambda: True, log=logs / f"{name}.log", env=env
    )


async def test_sigkilled_worker_job_is_redelivered_and_succeeds(
    tmp_path: Path, own_nats: ServiceProcess, bus: NatsBus, object_settings: ObjectStoreSettings
) -> None:
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        "FORGE_NATS__URL": own_nats.url,
        "FORGE_OBJECTS__ENDPOINT": object_settings.endpoint,
        "FORGE_OBJECTS__ACCESS_KEY": object_settings.access_key,
        "FORGE_OBJECTS__SECRET_KEY": object_settings.secret_key.get_secret_value(),
        "FORGE_OBJECTS__BUCKET": object_settings.bucket,
        "FORGE_GIT__CACHE_DIR": str(tmp_path / "git-cache"),
        "FORGE_CI__WORK_DIR": str(tmp_path / "work"),
        "FORGE_WORKER__ACK_WAIT": "2",
        "FORGE_WORKER__HEARTBEAT": "0.5",
        "FORGE_WORKER__FETCH_WAIT": "0.2",
    }
    go = out / "go"
    script = 'echo $$ > "$OUT/started.$$"; while [ ! -f "$GO" ]; do sleep 0.05; done; echo done'
    job = ci_job(str(src), sha, script, env={"OUT": str(out), "GO": str(go)})
    await bus.ensure_streams(STREAMS)
    first = _worker("worker-1", env, tmp_path / "logs")
    second: ServiceProcess | None = None
    steps: list[int] = []
    try:
        async with asyncio.TaskGroup() as tasks:
            pending = tasks.create_task(dispatch(bus, job, timeout=90))
            async with asyncio.timeout(30):
                while not (started := list(out.glob("started.*"))):
                    await asyncio.sleep(0.05)
            steps.append(read_pid(started[0]))
            # the worker dies without acking; its step (own session) is orphaned and ends when go appears
            os.killpg(first.pid, signal.SIGKILL)
            second = _worker("worker-2", env, tmp_path / "logs")
            async with asyncio.timeout(30):  # redelivered after ack_wait, run again by the second worker
                while len(started := list(out.glob("started.*"))) < 2:
                    await asyncio.sleep(0.05)
            steps.extend(read_pid(p) for p in started if read_pid(p) not in steps)
            go.touch()
            result = await pending
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        for pid in steps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert result.success, (result.error, (tmp_path / "logs" / "worker-2.log").read_text()[-3000:])
    assert result.data is not None
    assert result.data["exit_code"] == 0
    assert len(steps) == 2

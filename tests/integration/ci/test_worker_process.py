"""``forge-worker ci`` as a real process: SIGKILLed mid-step, its step's processes die with it and
its job is redelivered to the next worker (whose log takes the dead one's over, the boundary marked);
SIGKILLed after its step settled, the next worker finishes the job without running the step again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from uuid import uuid4

import nats

from forge.adapters.nats_bus import NatsBus
from forge.domain.events import EVENTS_STREAM, StepEvent, event_subject
from forge.domain.messages import STREAMS, DiscoveryPayload, Job, JobType
from forge.embedded.process import ServiceProcess, binary, start_service
from forge.errors import NotFoundError, ServiceUnavailableError
from forge.jobs.dispatch import dispatch, stored_result
from forge.logs import LogReader, log_key
from forge.ports import ObjectStore
from forge.settings import ObjectStoreSettings
from forge.workflows.workers.settling import stored_settled

from .support import alive, ci_job, read_pid, standard_repo, worker_env, worker_process


async def test_sigkilled_worker_job_is_redelivered_and_a_follow_across_it_equals_the_final_log(
    tmp_path: Path,
    own_nats: ServiceProcess,
    bus: NatsBus,
    objects: ObjectStore,
    object_settings: ObjectStoreSettings,
) -> None:
    """Issue 7 §4 across a worker kill: the redelivery prints other output than the killed delivery; a
    follower that spans the kill sees each delivery once, the boundary marked, and equals the final log."""
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    out = tmp_path / "out"
    out.mkdir()
    env = worker_env(tmp_path, own_nats.url, object_settings)
    go = out / "go"
    script = 'echo "output of $$"; echo $$ > "$OUT/started.$$"; while [ ! -f "$GO" ]; do sleep 0.05; done; echo done'
    job = ci_job(str(src), sha, script, env={"OUT": str(out), "GO": str(go)})
    key = log_key(job.run_id, "test", "svc", "unit")
    await bus.ensure_streams(STREAMS)
    first = worker_process("worker-1", env, tmp_path / "logs")
    second: ServiceProcess | None = None
    steps: list[int] = []
    followed = bytearray()
    try:
        async with asyncio.TaskGroup() as tasks:
            pending = tasks.create_task(dispatch(bus, job, timeout=90))

            async def settled() -> bool:  # what the API asks the store: here, the job's result is in
                return pending.done()

            async def follow() -> None:
                async for chunk in LogReader(objects).follow(key, poll=0.05, idle_timeout=60, settled=settled):
                    followed.extend(chunk)

            follower = tasks.create_task(follow())
            async with asyncio.timeout(30):
                while not (started := list(out.glob("started.*"))):
                    await asyncio.sleep(0.05)
            steps.append(read_pid(started[0]))
            async with asyncio.timeout(30):  # the follower has shown the first delivery's output
                while f"output of {steps[0]}".encode() not in followed:
                    await asyncio.sleep(0.05)
            # the worker dies without acking; its step dies with it
            os.killpg(first.pid, signal.SIGKILL)
            second = worker_process("worker-2", env, tmp_path / "logs")
            async with asyncio.timeout(30):  # redelivered after ack_wait, run again by the second worker
                while len(started := list(out.glob("started.*"))) < 2:
                    await asyncio.sleep(0.05)
            steps.extend(read_pid(p) for p in started if read_pid(p) not in steps)
            go.touch()
            result = await pending
            await asyncio.wait_for(follower, 30)
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
    log = await objects.get(key)
    assert bytes(followed) == log
    text = log.decode()
    killed, rerun = steps
    boundary = "forge: the worker running this step stopped before the step ended; delivery 2 runs it again"
    for line in (f"output of {killed}\n", f"output of {rerun}\n", boundary, "\ndone\n"):
        assert text.count(line) == 1, (line, text)
    assert text.count("forge: test/svc/unit attempt 1 of 1") == 2  # each delivery's header
    assert text.index(f"output of {killed}") < text.index(boundary) < text.index(f"output of {rerun}")
    assert text.endswith("done\n")
    assert await objects.list(f"{key}.parts/") == []


async def test_a_worker_killed_after_its_step_settled_does_not_run_the_step_again(
    tmp_path: Path,
    own_nats: ServiceProcess,
    bus: NatsBus,
    objects: ObjectStore,
    object_settings: ObjectStoreSettings,
) -> None:
    """Issue 11: the worker dies between the step's end and its stored result. The window is held open
    without a hook: the events stream is deleted, so the worker (its outcome settled) retries the final
    event until it is SIGKILLed; the redelivery finishes the job from the settled outcome: the log is
    completed, the event published and the result stored, and the step's command ran once."""
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    ledger = tmp_path / "ledger"
    step_id = uuid4()
    script = f'echo start >> "{ledger}"; echo step output; echo done >> "{ledger}"'
    job = ci_job(str(src), sha, script, step_execution_id=step_id)
    key = log_key(job.run_id, "test", "svc", "unit")
    env = worker_env(tmp_path, own_nats.url, object_settings)
    first = worker_process("worker-1", env, tmp_path / "logs")
    second: ServiceProcess | None = None
    try:
        async with asyncio.timeout(60):  # the process created the streams and its consumer
            while True:
                with contextlib.suppress(NotFoundError, ServiceUnavailableError):
                    await bus.last_payload("pipeline-tasks", "pipeline.tasks.none")
                    await bus.last_payload(EVENTS_STREAM, "pipeline.events.none")
                    break
                await asyncio.sleep(0.1)
        nc = await nats.connect(own_nats.url)
        try:
            await nc.jetstream().delete_stream(EVENTS_STREAM)
        finally:
            await nc.close()
        pending = asyncio.ensure_future(dispatch(bus, job, timeout=90))  # awaited below
        async with asyncio.timeout(30):
            while await stored_settled(bus, job.key) is None:
                await asyncio.sleep(0.05)
        assert ledger.read_text() == "start\ndone\n"
        assert await stored_result(bus, job.key) is None  # the worker is still retrying the final event
        os.killpg(first.pid, signal.SIGKILL)
        await bus.ensure_streams(STREAMS)  # the events stream is back
        second = worker_process("worker-2", env, tmp_path / "logs")
        result = await asyncio.wait_for(pending, 60)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
    assert result.success, result.error
    assert result.data is not None
    assert result.data["exit_code"] == 0
    assert ledger.read_text() == "start\ndone\n"  # the command ran once
    assert "without running it again" in (tmp_path / "logs" / "worker-2.log").read_text()
    log = await objects.get(key)
    assert log.count(b"step output\n") == 1
    assert await objects.list(f"{key}.parts/") == []
    event = StepEvent.model_validate_json(await bus.last_payload(EVENTS_STREAM, event_subject(job.run_id)) or b"")
    assert (event.step_id, event.kind, event.exit_code) == (step_id, "success", 0)


async def test_a_sigkilled_worker_takes_its_step_s_processes_with_it(
    tmp_path: Path, own_nats: ServiceProcess, bus: NatsBus, object_settings: ObjectStoreSettings
) -> None:
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'sleep 300 & echo $! > "$OUT/child"; setsid sleep 300 & echo $! > "$OUT/grandchild";'
        ' echo $$ > "$OUT/shell"; wait'
    )
    job = ci_job(str(src), sha, script, env={"OUT": str(out)})
    await bus.ensure_streams(STREAMS)
    worker = worker_process("worker", worker_env(tmp_path, own_nats.url, object_settings), tmp_path / "logs")
    pids: list[int] = []
    pending = asyncio.ensure_future(dispatch(bus, job, timeout=90))  # never answered: cancelled below
    try:
        async with asyncio.timeout(30):
            while not (out / "shell").exists() or not (out / "shell").read_text().strip():
                await asyncio.sleep(0.05)
        pids = [read_pid(out / name) for name in ("shell", "child", "grandchild")]
        assert all(alive(pid) for pid in pids)
        os.killpg(worker.pid, signal.SIGKILL)
        async with asyncio.timeout(10):  # generous: it takes milliseconds
            while any(alive(pid) for pid in pids):
                await asyncio.sleep(0.05)
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        worker.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_one_process_serves_several_job_types(
    tmp_path: Path, own_nats: ServiceProcess, bus: NatsBus, object_settings: ObjectStoreSettings
) -> None:
    """``forge-worker discovery ci``: both job types served by one process (the registry), streams
    ensured by the process itself."""
    src = tmp_path / "src" / "mono.git"
    sha = standard_repo(src)
    env = worker_env(tmp_path, own_nats.url, object_settings)
    both = start_service(
        "worker-both",
        [binary("forge-worker"), "discovery", "ci"],
        url="",
        ready=lambda: True,
        log=tmp_path / "logs" / "worker-both.log",
        env=env,
    )
    try:
        ci = ci_job(str(src), sha, "echo ci ran")
        discovery = Job(
            key=f"discovery.{ci.run_id}",
            type=JobType.DISCOVERY,
            run_id=ci.run_id,
            repository=ci.repository,
            commit_sha=sha,
            payload=DiscoveryPayload(clone_url=str(src)),
            deadline=ci.deadline,
        )
        async with asyncio.timeout(60):
            while True:  # the process creates the streams; until then a look-up finds none
                with contextlib.suppress(NotFoundError, ServiceUnavailableError):
                    await bus.last_payload("pipeline-tasks", "pipeline.tasks.none")
                    break
                await asyncio.sleep(0.1)
        found, ran = await asyncio.gather(dispatch(bus, discovery, timeout=60), dispatch(bus, ci, timeout=60))
    finally:
        both.stop()
    assert found.success, found.error
    assert found.data is not None
    assert found.data["object_key"] == f"pipeline-runs/{ci.run_id}/discovery.json"
    assert ran.success, ran.error
    assert ran.data is not None
    assert ran.data["exit_code"] == 0

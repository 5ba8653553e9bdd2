"""The real ExecutionReconciler driving ArgoWorkflowEngine against a fake Argo Server (support.py).

Runs live in real PostgreSQL and cancels go over real NATS; nobody reports steps (there are no CI
workers), so what the store ends with is what the controller settles from the workflow:
``finish_run`` skips steps that never started, and a failed node fails its step with the node's
message.

The discovery: ``lib`` (check/lint, test/unit) and ``app`` depending on it (build/bundle,
test/unit); phase group 1 holds ``check`` and ``build``, group 2 ``test``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

from forge.adapters.argo_workflows import ArgoWorkflowEngine
from forge.adapters.github_statuses import GithubStatuses
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.controller.commit_status import CommitStatuses
from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.execution import ExecutionReconciler, TemplateOptions
from forge.controller.step_events import StepEventRecorder
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import PipelineRun, Trigger
from forge.domain.messages import CANCEL_SUBJECTS, STREAMS
from forge.domain.status import Status
from forge.ports.store import NewRepository, NewRun
from forge.testing.discoveries import LIB_AND_APP_STEPS, lib_and_app
from forge.testing.github import FakeGithub
from forge.workflows.templates import validate_workflow_template

from .conftest import NAMESPACE
from .support import EXIT_3, FakeArgo, Outcome

REPO = "acme/mono"
CLONE_URL = "https://git.example.com/acme/mono.git"
SHA = "c0ffee" + "0" * 34
RUN_LABEL = "forge.projectcatalyst.io/run-id"
STEPS = LIB_AND_APP_STEPS


def discovery() -> DiscoveryResult:
    return lib_and_app(SHA, REPO)


async def discovered_run(store: PostgresStore, trigger: Trigger = Trigger.MANUAL) -> PipelineRun:
    """A run whose discovery succeeded, as the discovery reconciler leaves it."""
    await store.register_repository(NewRepository(REPO, CLONE_URL))
    run, created = await store.create_run(NewRun(repository=REPO, commit_sha=SHA, branch="main", trigger=trigger))
    assert created
    assert [r.id for r in await store.claim_discovery(limit=10)] == [run.id]
    return await store.record_discovery(run.id, discovery(), f"discovery/{run.id}.json")


@contextlib.asynccontextmanager
async def reconciling(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, statuses: CommitStatuses | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    await bus.ensure_streams(STREAMS)
    recorder = StepEventRecorder(executions=store, bus=bus, fetch_wait=0.1)
    reconciler = ExecutionReconciler(
        runs=store,
        repositories=store,
        executions=store,
        bus=bus,
        engine=engine,
        recorder=recorder,
        options=TemplateOptions(image="img", namespace=NAMESPACE, parallelism=10),
        statuses=statuses,
    )
    stop = asyncio.Event()

    async def controller() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(recorder.run(stop))
            group.create_task(ReconcileLoop(reconciler, poll_interval=0.05, backoff_max=0.2).run(stop))

    task = asyncio.create_task(controller())
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task  # re-raises whatever crashed the reconciler


async def until(task: asyncio.Task[None], check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check()`` until true; fail at once when the reconciler stopped (it must run until told)."""
    async with asyncio.timeout(30):
        while not await check():
            if task.done():
                task.result()  # raises the reconciler's error
                raise AssertionError("the reconciler stopped before it was told to")
            await asyncio.sleep(0.02)


async def finished(store: PostgresStore, task: asyncio.Task[None], run_id: UUID) -> PipelineRun:
    async def final() -> bool:
        return (await store.get_run(run_id)).status.is_final

    await until(task, final)
    return await store.get_run(run_id)


async def steps_of(store: PostgresStore, run_id: UUID) -> dict[str, tuple[Status, str | None]]:
    """``phase/project/step`` → (status, message) of every step of the run."""
    ex = await store.get_executions(run_id)
    status = {s.id: s.status for s in ex.steps}
    return {"/".join(key): (status[sid], ex.detail(sid).message) for key, sid in ex.step_ids().items()}


async def phases_of(store: PostgresStore, run_id: UUID) -> dict[str, Status]:
    ex = await store.get_executions(run_id)
    return {p.name: p.status for p in ex.phases}


async def test_a_workflow_that_succeeds_succeeds_the_run(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    run = await discovered_run(store)
    async with reconciling(store, bus, engine) as task:
        done = await finished(store, task, run.id)
    assert (done.status, done.error, done.error_code) == (Status.SUCCESS, None, None)

    name = f"forge-run-{run.id}"
    assert list(argo.received) == [name]
    validate_workflow_template(argo.received[name])
    assert argo.groups(name) == [  # the DAG the fake ran: one nested DAG per phase group
        ("group-1", ["build-app-bundle", "check-lib-lint"]),
        ("group-2", ["test-app-unit", "test-lib-unit"]),
    ]
    assert argo.received[name]["metadata"]["namespace"] == NAMESPACE
    [create] = argo.seen("POST", f"/api/v1/workflow-templates/{NAMESPACE}")
    assert create.body["namespace"] == NAMESPACE
    [submit] = argo.seen("POST", f"/api/v1/workflows/{NAMESPACE}/submit")
    assert submit.body["resourceKind"] == "WorkflowTemplate"
    assert submit.body["resourceName"] == name
    assert submit.body["submitOptions"]["labels"] == f"{RUN_LABEL}={run.id}"
    [workflow] = argo.workflows
    assert workflow.startswith(f"{name}-")
    assert done.workflow_name == workflow
    assert argo.workflows[workflow].labels == {RUN_LABEL: str(run.id)}
    assert argo.gets_of(workflow) >= 2  # followed through Running to Succeeded
    assert not argo.seen("PUT")

    # no worker reported a step: finish_run's sweep skips every one of them
    assert await steps_of(store, run.id) == dict.fromkeys(STEPS, (Status.SKIPPED, None))
    assert await phases_of(store, run.id) == dict.fromkeys(["build", "check", "test"], Status.SKIPPED)


async def test_a_failed_node_fails_its_step_and_the_run(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    argo.outcome = Outcome(fail="check-lib-lint")
    run = await discovered_run(store)
    async with reconciling(store, bus, engine) as task:
        done = await finished(store, task, run.id)
    assert (done.status, done.error, done.error_code) == (Status.FAILED, "child 'group-1' failed", "workflow_failed")
    [workflow] = argo.workflows
    assert done.workflow_name == workflow

    steps = await steps_of(store, run.id)
    # settled from the node: no worker reported, so the controller fails it with Argo's message
    assert steps["check/lib/lint"] == (Status.FAILED, EXIT_3)
    # Argo says build-app-bundle succeeded, but only a worker's report counts: never started here
    assert steps == {
        "check/lib/lint": (Status.FAILED, EXIT_3),
        "build/app/bundle": (Status.SKIPPED, None),
        "test/lib/unit": (Status.SKIPPED, None),
        "test/app/unit": (Status.SKIPPED, None),
    }
    assert await phases_of(store, run.id) == {"check": Status.FAILED, "build": Status.SKIPPED, "test": Status.SKIPPED}
    assert not argo.seen("PUT")


async def test_cancelling_a_run_terminates_its_workflow(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    argo.outcome = Outcome(hold=True)  # Running until terminated
    run = await discovered_run(store)
    async with bus.subscribe(CANCEL_SUBJECTS) as cancels, reconciling(store, bus, engine) as task:

        async def followed() -> bool:
            current = await store.get_run(run.id)
            return current.workflow_name is not None and argo.gets_of(current.workflow_name) >= 2

        await until(task, followed)
        workflow = (await store.get_run(run.id)).workflow_name
        assert workflow is not None
        assert not argo.seen("PUT")
        await store.request_cancel(run.id)
        done = await finished(store, task, run.id)
        assert await cancels.next(timeout=30) == str(run.id).encode()  # workers kill the run's steps

    assert (done.status, done.error) == (Status.CANCELLED, "cancelled by request")
    [terminate] = argo.seen("PUT")
    assert terminate.path == f"/api/v1/workflows/{NAMESPACE}/{workflow}/terminate"
    assert terminate.body == {"namespace": NAMESPACE, "name": workflow}
    assert argo.workflows[workflow].terminated
    assert await steps_of(store, run.id) == dict.fromkeys(STEPS, (Status.SKIPPED, None))


async def test_an_argo_server_answering_503_for_a_while_is_waited_out(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    argo.outage.fail_next(12, retry_after="0")  # more than the adapter's own 5 attempts: the loop retries too
    run = await discovered_run(store)
    async with reconciling(store, bus, engine) as task:
        done = await finished(store, task, run.id)
    assert argo.outage.failed == 12
    assert (done.status, done.error) == (Status.SUCCESS, None)
    assert len(argo.workflows) == 1  # retried, never submitted twice


class _SlowTerminate(ArgoWorkflowEngine):
    """Argo whose terminate reply is slow: the workflow is already final when ``stop`` returns."""

    async def stop(self, workflow_name: str, *, message: str) -> None:
        await super().stop(workflow_name, message=message)
        await asyncio.sleep(0.5)


async def test_a_workflow_ending_while_its_cancel_is_handled_still_cancels_the_run(
    store: PostgresStore, bus: NatsBus, argo: FakeArgo
) -> None:
    argo.outcome = Outcome(hold=True)
    run = await discovered_run(store)
    async with (
        _SlowTerminate(argo.url, namespace=NAMESPACE, poll_interval=0.05) as engine,
        reconciling(store, bus, engine) as task,
    ):

        async def submitted() -> bool:
            return (await store.get_run(run.id)).workflow_name is not None

        await until(task, submitted)
        await store.request_cancel(run.id)
        done = await finished(store, task, run.id)
        assert not task.done()  # the reconciler keeps running
    assert (done.status, done.error) == (Status.CANCELLED, "cancelled by request")


def _requests(github: FakeGithub, count: int) -> Callable[[], Awaitable[bool]]:
    async def enough() -> bool:
        return len(github.requests) >= count

    return enough


async def test_commit_statuses_follow_a_pushed_run(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    github = FakeGithub()
    try:
        argo.outcome = Outcome(fail="check-lib-lint")
        run = await discovered_run(store, Trigger.PUSH)
        async with GithubStatuses.from_token(github.url, github.token) as host:
            statuses = CommitStatuses(host=host, context="ci/catalyst-forge", public_url="http://forge.test/")
            async with reconciling(store, bus, engine, statuses) as task:
                await finished(store, task, run.id)
                await until(task, _requests(github, 2))  # the final status is posted after the run ends
    finally:
        github.close()
    assert github.statuses() == [
        (SHA, "pending", "running: 4 steps"),
        (SHA, "failure", "failed: child 'group-1' failed"),
    ]
    assert {r.body["target_url"] for r in github.requests} == {f"http://forge.test/v1/runs/{run.id}"}
    assert {r.body["context"] for r in github.requests} == {"ci/catalyst-forge"}


async def test_an_unavailable_github_never_blocks_a_run(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    github = FakeGithub(fail_next=[500] * 10)  # GitHub is down for every call
    try:
        run = await discovered_run(store, Trigger.PUSH)
        async with GithubStatuses.from_token(github.url, github.token) as host:
            host._retry_delay = 0.01
            statuses = CommitStatuses(host=host, context="ci/catalyst-forge", public_url="http://forge.test")
            async with reconciling(store, bus, engine, statuses) as task:
                done = await finished(store, task, run.id)
                await until(task, _requests(github, 4))
    finally:
        github.close()
    assert done.status is Status.SUCCESS
    assert github.statuses() == []
    assert len(github.requests) == 4  # pending and success, each tried twice


async def test_manual_runs_post_no_commit_status(
    store: PostgresStore, bus: NatsBus, engine: ArgoWorkflowEngine, argo: FakeArgo
) -> None:
    github = FakeGithub()
    try:
        run = await discovered_run(store, Trigger.MANUAL)  # e.g. `forge run` of a local folder
        async with GithubStatuses.from_token(github.url, github.token) as host:
            statuses = CommitStatuses(host=host, context="ci/catalyst-forge", public_url="http://forge.test")
            async with reconciling(store, bus, engine, statuses) as task:
                done = await finished(store, task, run.id)
                await asyncio.sleep(0.3)  # time for a status that must not come
    finally:
        github.close()
    assert done.status is Status.SUCCESS
    assert github.requests == []

"""ReconcileLoop with a scripted reconciler: what each kind of error means, one task per run, interrupts, stop.

The reconciler here is a test double (the loop is under test): each call of ``reconcile`` for a
run takes the next step of that run's script (raise an exception, wait for an event, or return).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Sequence
from uuid import UUID, uuid4

from forge.controller.reconcile import ReconcileLoop
from forge.controller.reconcilers.run_tasks import RunTasks
from forge.errors import ForgeError, PermanentError, TransientError

from .support import Running, running, until

#: One step of a run's script: raise it, wait for it (an Event), or return (None).
Step = Exception | asyncio.Event | None


class Scripted:
    """A ``Reconciler`` whose every answer the test chooses, recording what the loop asked."""

    name = "scripted"

    def __init__(self) -> None:
        self.resumable: list[UUID] = []
        self.resume_errors: deque[Exception] = deque()  # raised by the first resume() calls
        self.claims: deque[list[UUID] | Exception] = deque()  # one per claim() call, then []
        self.interrupting: list[UUID] = []  # answered by every interrupts() call
        self.scripts: dict[UUID, deque[Step]] = {}
        self.fail_errors: deque[Exception] = deque()  # raised by the first fail() calls
        self.log: list[str] = []  # "resume", "claim", "reconcile <run>" in order
        self.resumes = 0
        self.claim_calls = 0
        self.interrupt_calls = 0
        self.calls: Counter[UUID] = Counter()  # reconcile calls per run
        self.returned: Counter[UUID] = Counter()
        self.cancelled: Counter[UUID] = Counter()
        self.active: Counter[UUID] = Counter()
        self.peak: Counter[UUID] = Counter()  # most reconciles of one run at once
        self.fail_calls: list[tuple[UUID, ForgeError]] = []
        self.failed: list[tuple[UUID, ForgeError]] = []  # fail() calls that returned

    def script(self, run_id: UUID, *steps: Step) -> None:
        self.scripts[run_id] = deque(steps)

    async def resume(self) -> Sequence[UUID]:
        await asyncio.sleep(0)  # a round trip
        self.resumes += 1
        self.log.append("resume")
        if self.resume_errors:
            raise self.resume_errors.popleft()
        return list(self.resumable)

    async def claim(self) -> Sequence[UUID]:
        await asyncio.sleep(0)
        self.claim_calls += 1
        self.log.append("claim")
        answer = self.claims.popleft() if self.claims else []
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def interrupts(self) -> Sequence[UUID]:
        await asyncio.sleep(0)
        self.interrupt_calls += 1
        return list(self.interrupting)

    async def reconcile(self, run_id: UUID) -> None:
        self.log.append(f"reconcile {run_id}")
        self.calls[run_id] += 1
        self.active[run_id] += 1
        self.peak[run_id] = max(self.peak[run_id], self.active[run_id])
        try:
            script = self.scripts.get(run_id)
            step = script.popleft() if script else None
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif step is not None:
                raise step
        except asyncio.CancelledError:
            self.cancelled[run_id] += 1
            raise
        finally:
            self.active[run_id] -= 1
        self.returned[run_id] += 1

    async def fail(self, run_id: UUID, error: ForgeError) -> None:
        await asyncio.sleep(0)
        self.fail_calls.append((run_id, error))
        if self.fail_errors:
            raise self.fail_errors.popleft()
        self.failed.append((run_id, error))


def loop_of(reconciler: Scripted) -> ReconcileLoop:
    return ReconcileLoop(reconciler, poll_interval=0.001, backoff_max=0.01)


async def polls(loop: Running, reconciler: Scripted, n: int) -> None:
    """Let the loop poll ``n`` more times (claims and interrupts both asked)."""
    target = reconciler.interrupt_calls + n
    await loop.until(lambda: reconciler.interrupt_calls >= target)


async def test_a_transient_error_is_retried_and_never_fails_the_run() -> None:
    reconciler = Scripted()
    run = uuid4()
    reconciler.script(run, TransientError("PostgreSQL is restarting"), TransientError("again"), TransientError("x"))
    reconciler.claims.append([run])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[run] == 1)
        await polls(loop, reconciler, 3)
    assert reconciler.calls[run] == 4
    assert reconciler.fail_calls == []


async def test_a_transient_error_with_retry_after_is_retried_too() -> None:
    reconciler = Scripted()
    run = uuid4()
    reconciler.script(run, TransientError("Argo says 503", retry_after=30.0), TransientError("still", retry_after=1))
    reconciler.claims.append([run])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[run] == 1)
    assert reconciler.calls[run] == 3
    assert reconciler.fail_calls == []


async def test_a_permanent_error_fails_the_run_once_with_that_error() -> None:
    reconciler = Scripted()
    run = uuid4()
    error = PermanentError("invalid configuration (1 error(s)):\nx.yaml:1: steps: required", code="invalid_config")
    reconciler.script(run, error)
    reconciler.claims.append([run])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: len(reconciler.failed) == 1)
        await polls(loop, reconciler, 3)
    assert reconciler.fail_calls == [(run, error)]
    [(_, failed_with)] = reconciler.failed
    assert failed_with is error
    assert failed_with.code == "invalid_config"
    assert reconciler.calls[run] == 1  # not retried


async def test_an_unexpected_exception_fails_the_run_as_internal_and_the_loop_goes_on() -> None:
    reconciler = Scripted()
    broken, other, later = uuid4(), uuid4(), uuid4()
    reconciler.script(broken, KeyError("workflow_name"))
    reconciler.claims.extend([[broken, other], [later]])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[later] == 1)
        await loop.until(lambda: len(reconciler.failed) == 1)
    [(run, error)] = reconciler.fail_calls
    assert run == broken
    assert type(error) is ForgeError  # neither transient nor permanent: a bug
    assert error.code == "internal"
    assert "KeyError" in error.message
    assert "workflow_name" in error.message
    assert reconciler.calls[broken] == 1
    assert reconciler.returned == Counter({other: 1, later: 1})


async def test_failing_a_run_is_retried_on_transient_errors() -> None:
    reconciler = Scripted()
    run = uuid4()
    error = PermanentError("no such repository", code="not_found")
    reconciler.script(run, error)
    reconciler.fail_errors.extend([TransientError("PostgreSQL down"), TransientError("still down")])
    reconciler.claims.append([run])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: len(reconciler.failed) == 1)
    assert reconciler.fail_calls == [(run, error)] * 3
    assert reconciler.failed == [(run, error)]
    assert reconciler.calls[run] == 1  # the run is not reconciled again: only its failing is retried


async def test_a_bug_in_fail_does_not_take_the_loop_down() -> None:
    """Like a bug in ``reconcile``, a bug in ``fail`` must not stop the loop acting on other runs."""
    reconciler = Scripted()
    broken, other = uuid4(), uuid4()
    reconciler.script(broken, PermanentError("bad", code="invalid_config"))
    reconciler.fail_errors.append(KeyError("error_code"))
    reconciler.claims.extend([[broken], [], [], [other]])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[other] == 1)
        assert not loop.task.done()


async def test_resumed_runs_are_driven_at_start_and_resume_is_retried() -> None:
    reconciler = Scripted()
    first, second = uuid4(), uuid4()
    reconciler.resumable = [first, second]
    reconciler.resume_errors.extend([TransientError("PostgreSQL down"), TransientError("still down")])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[first] == reconciler.returned[second] == 1)
    assert reconciler.resumes == 3
    assert reconciler.log[:3] == ["resume"] * 3  # nothing is claimed before the previous work is resumed
    assert reconciler.fail_calls == []


async def test_a_transient_error_while_claiming_keeps_the_loop_going() -> None:
    reconciler = Scripted()
    run = uuid4()
    reconciler.claims.extend([TransientError("PostgreSQL down"), TransientError("still down"), [run]])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.returned[run] == 1)
    assert reconciler.fail_calls == []


async def test_a_run_claimed_twice_is_driven_once_at_a_time() -> None:
    reconciler = Scripted()
    run = uuid4()
    gate = asyncio.Event()
    reconciler.script(run, gate)
    reconciler.claims.extend([[run], [run], [run]])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.claim_calls >= 3)
        await polls(loop, reconciler, 3)
        assert reconciler.calls[run] == 1  # the later claims found it running
        gate.set()
        await loop.until(lambda: reconciler.returned[run] == 1)
        reconciler.claims.append([run])  # claimed once its task ended: driven again
        await loop.until(lambda: reconciler.returned[run] == 2)
    assert reconciler.peak[run] == 1


async def test_an_interrupt_starts_the_run_over_once_while_the_new_task_lives() -> None:
    reconciler = Scripted()
    run = uuid4()
    stuck, second = asyncio.Event(), asyncio.Event()  # ``stuck`` is never set
    reconciler.script(run, stuck, second)
    reconciler.claims.append([run])
    async with running(loop_of(reconciler).run) as loop:
        await loop.until(lambda: reconciler.active[run] == 1)
        reconciler.interrupting = [run]  # say, its cancel was requested
        await loop.until(lambda: reconciler.calls[run] == 2)
        assert reconciler.cancelled[run] == 1  # the first reconcile was cancelled, then started over
        await polls(loop, reconciler, 5)  # still listed: the new task is left to finish
        assert reconciler.calls[run] == 2
        assert reconciler.cancelled[run] == 1
        reconciler.interrupting = []
        second.set()
        await loop.until(lambda: reconciler.returned[run] == 1)
    assert reconciler.peak[run] == 1
    assert reconciler.fail_calls == []


async def test_an_interrupt_as_the_runs_task_ends_still_keeps_one_task_per_run() -> None:
    """The run's reconcile returns in the same loop iteration its interrupt is read."""
    reconciler = Scripted()
    run = uuid4()
    ending, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
    reconciler.script(run, ending, second, third)
    reconciler.claims.append([run])
    interrupts = reconciler.interrupts

    async def interrupt_as_it_ends() -> Sequence[UUID]:
        if reconciler.active[run] and not ending.is_set():
            ending.set()  # its reconcile returns and its task ends just before the answer arrives
            reconciler.interrupting = [run]
        return await interrupts()

    reconciler.interrupts = interrupt_as_it_ends  # type: ignore[method-assign]
    async with running(loop_of(reconciler).run) as loop:
        try:
            await loop.until(lambda: reconciler.calls[run] >= 2)
            await polls(loop, reconciler, 5)
        finally:
            reconciler.interrupting = []
            second.set()  # a task the loop lost track of is not cancelled on stop: let it end
            third.set()
    assert reconciler.calls[run] == 2
    assert reconciler.peak[run] == 1, "two reconciles of one run ran at once"


async def test_stop_ends_the_loop_and_cancels_the_runs_in_progress() -> None:
    reconciler = Scripted()
    run = uuid4()
    reconciler.script(run, asyncio.Event())  # never set
    reconciler.claims.append([run])
    loop = loop_of(reconciler)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: reconciler.active[run] == 1, task=task)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert reconciler.cancelled[run] == 1
    assert reconciler.fail_calls == []


async def test_run_tasks_never_forget_a_newer_task_of_the_same_run() -> None:
    """A task that ended but whose done callback has not run yet is replaced by a new one."""
    run = uuid4()
    release = asyncio.Event()

    async def quick() -> None:
        return None

    async def slow() -> None:
        await release.wait()

    async with asyncio.TaskGroup() as group:
        runs = RunTasks(group)
        runs.start(run, quick())
        await asyncio.sleep(0)  # quick() runs and ends; its done callbacks are only scheduled
        await runs.cancel(run)  # it is over already: nothing to wait for
        runs.start(run, slow())
        await asyncio.sleep(0)  # the ended task's done callback runs now
        try:
            assert runs.active(run), "the run's running task was forgotten"
        finally:
            release.set()

"""Internal status endpoints (DESIGN §7): workers report steps, the controller runs, phases and tasks.

Transitions follow ``forge.domain.status.ensure_transition`` (409 otherwise; a repeat is fine);
a step's task and phase roll up in the same transaction.
"""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, put
from litestar.params import FromPath, JSONBody

from forge.api.schemas import PhaseOut, RunOut, RunStatusIn, StatusIn, StepOut, StepStatusIn, TaskOut
from forge.api.services import Services
from forge.domain.status import Status

__all__ = ["StatusController"]

_ENDS = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})


class StatusController(Controller):
    path = "/v1"
    tags = ["internal status"]

    @put(
        "/steps/{step_id:uuid}/status",
        summary="Report a step's status (workers)",
        description="Rolls the step's task and phase up. 404 for an unknown step, 409 for an illegal transition "
        "or for starting a step of a finished or cancelling run.",
    )
    async def step_status(self, step_id: FromPath[UUID], data: JSONBody[StepStatusIn], services: Services) -> StepOut:
        step = await services.store.set_step_status(
            step_id,
            data.status,
            exit_code=data.exit_code,
            attempt=data.attempt,
            logs_key=data.logs_key,
            message=data.message,
        )
        return StepOut.of(step)

    @put("/tasks/{task_id:uuid}/status", summary="Set a task's status (controller)")
    async def task_status(self, task_id: FromPath[UUID], data: JSONBody[StatusIn], services: Services) -> TaskOut:
        return TaskOut.of(await services.store.set_task_status(task_id, data.status))

    @put("/phases/{phase_id:uuid}/status", summary="Set a phase's status (controller)")
    async def phase_status(self, phase_id: FromPath[UUID], data: JSONBody[StatusIn], services: Services) -> PhaseOut:
        return PhaseOut.of(await services.store.set_phase_status(phase_id, data.status))

    @put(
        "/runs/{run_id:uuid}/status",
        summary="Set a run's status (controller)",
        description="success, failed and cancelled finish the run: its pending steps become skipped and its "
        "running steps cancelled. 409 when the run already ended otherwise.",
    )
    async def run_status(self, run_id: FromPath[UUID], data: JSONBody[RunStatusIn], services: Services) -> RunOut:
        if data.status in _ENDS:
            run = await services.store.finish_run(run_id, data.status, error=data.error)
        else:
            run = await services.store.set_run_status(run_id, data.status, error=data.error)
        return RunOut.of(run)

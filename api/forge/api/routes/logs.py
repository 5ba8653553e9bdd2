"""``GET /v1/runs/{id}/steps/{step_id}/logs``: a presigned URL of a finished log, or the log so far, or a follow.

Logs live in object storage (``forge.logs``): the step's ``logs_key`` when its worker reported one,
else the conventional ``pipeline-runs/<run>/logs/<phase>/<project>/<step>.log``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from forge.api.errors import problem_spec
from forge.api.schemas import LogOut
from forge.api.services import Services
from forge.errors import NotFoundError
from forge.logs import LogReader, log_key

__all__ = ["PRESIGN_TTL", "step_logs"]

#: How long a presigned log URL stays valid.
PRESIGN_TTL = timedelta(minutes=15)
#: A follow ends this long after the log last grew (the step may have died without finishing it).
_FOLLOW_IDLE = 600.0
_FOLLOW_POLL = 0.5


@get(
    "/v1/runs/{run_id:uuid}/steps/{step_id:uuid}/logs",
    summary="A step's log",
    description="JSON `{complete: true, url}` (a presigned GET URL) once the log is complete, else "
    "`{complete: false, content}` with the log so far. With `follow=true`: `text/plain` streamed as it "
    "is written, ending when the log is complete and the step final (a retried step's attempts each once, "
    "each from its `forge: ... attempt N of M` line: the text equals the final log). "
    "404 when the step is not of this run or has no log yet.",
    tags=["runs"],
    responses={
        200: ResponseSpec(LogOut, description="The log, or where to fetch it"),
        400: problem_spec("Invalid run or step id, or query parameter"),
        404: problem_spec("No such step in this run, or no log yet"),
        503: problem_spec("Object storage or PostgreSQL unavailable"),
    },
)
async def step_logs(
    run_id: FromPath[UUID],
    step_id: FromPath[UUID],
    services: Services,
    follow: Annotated[bool, QueryParameter(description="Stream the log as text/plain until it is complete")] = False,
) -> Response[Any]:
    found = (await services.executions.get_executions(run_id)).find_step(step_id)
    if found is None:
        raise NotFoundError(
            f"run {run_id} has no step {step_id}", details={"run_id": str(run_id), "step_id": str(step_id)}
        )
    phase, task, step = found
    key = step.logs_key or log_key(run_id, phase.name, task.project, step.name)
    reader = LogReader(services.objects)
    if not follow and await reader.complete(key):  # presigned: the API never loads a finished log
        return Response(LogOut(complete=True, url=await services.objects.presign_get(key, PRESIGN_TTL)))
    content, complete = await reader.read(key)
    if not complete and not content:
        raise NotFoundError(
            f"step {step_id} ({phase.name}/{task.project}/{step.name}) has no log yet",
            details={"run_id": str(run_id), "step_id": str(step_id)},
        )
    if follow:
        # A step that ended without completing its log (its worker died) gets what there is, at once.
        idle = 0.0 if step.status.is_final else _FOLLOW_IDLE

        async def settled() -> bool:  # a retried step completes its log once per attempt: follow to the last
            if step.status.is_final:
                return True
            now = (await services.executions.get_executions(run_id)).find_step(step_id)
            return now is None or now[2].status.is_final

        return Stream(_follow(reader, key, idle, settled), media_type="text/plain; charset=utf-8")
    if complete:
        url = await services.objects.presign_get(key, PRESIGN_TTL)
        return Response(LogOut(complete=True, url=url))
    return Response(LogOut(complete=False, content=content.decode("utf-8", errors="replace")))


async def _follow(
    reader: LogReader, key: str, idle_timeout: float, settled: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    async for chunk in reader.follow(key, poll=_FOLLOW_POLL, idle_timeout=idle_timeout, settled=settled):
        yield chunk

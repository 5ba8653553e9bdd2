"""StatusReporter: how workers tell the platform what a step is doing (the API's internal endpoints)."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from forge.domain.status import Status

__all__ = ["StatusReporter"]


class StatusReporter(Protocol):
    async def step_status(
        self,
        step_id: UUID,
        status: Status,
        *,
        exit_code: int | None = None,
        attempt: int | None = None,
        logs_key: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record a step's status (``PUT /v1/steps/{id}/status``).

        ``ConflictError`` for an illegal transition, ``NotFoundError`` for an unknown step,
        ``ServiceUnavailableError`` when the API cannot be reached.
        """

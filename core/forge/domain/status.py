"""Status vocabularies and their allowed transitions (DESIGN §4)."""

from __future__ import annotations

from enum import StrEnum

from forge.errors import ConflictError

__all__ = ["ApprovalStatus", "DeploymentStatus", "Status", "ensure_transition"]


class Status(StrEnum):
    """Status of a run, phase, task or step."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class ApprovalStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


_FINAL = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.SKIPPED})

# Keyed by (vocabulary, value): the enums are str subclasses, so "pending" of Status and of
# DeploymentStatus would otherwise be one dict key.
_TRANSITIONS: dict[tuple[type[StrEnum], str], frozenset[StrEnum]] = {
    (Status, "pending"): frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED, Status.SKIPPED}),
    (Status, "running"): frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED}),
    (DeploymentStatus, "pending"): frozenset({DeploymentStatus.ACTIVE, DeploymentStatus.FAILED}),
    (DeploymentStatus, "active"): frozenset({DeploymentStatus.SUPERSEDED}),
    (ApprovalStatus, "active"): frozenset({ApprovalStatus.EXPIRED, ApprovalStatus.REVOKED}),
}


def allowed_next(current: StrEnum) -> frozenset[StrEnum]:
    return _TRANSITIONS.get((type(current), current.value), frozenset())


def ensure_transition(entity: str, current: StrEnum, new: StrEnum) -> None:
    """Raise ``ConflictError`` unless ``current -> new`` is allowed; a repeat of ``current`` is a no-op."""
    if type(current) is not type(new):
        raise ConflictError(f"{entity}: {new!s} is not a {type(current).__name__}")
    if current == new or new in allowed_next(current):
        return
    raise ConflictError(
        f"{entity}: cannot go from {current} to {new}",
        details={"from": str(current), "to": str(new)},
    )

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.domain.status import ApprovalStatus, DeploymentStatus, Status, ensure_transition
from forge.errors import ConflictError


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.PENDING, Status.RUNNING),
        (Status.PENDING, Status.SKIPPED),
        (Status.PENDING, Status.CANCELLED),
        (Status.RUNNING, Status.SUCCESS),
        (Status.RUNNING, Status.FAILED),
        (Status.RUNNING, Status.CANCELLED),
        (DeploymentStatus.PENDING, DeploymentStatus.ACTIVE),
        (DeploymentStatus.ACTIVE, DeploymentStatus.SUPERSEDED),
        (ApprovalStatus.ACTIVE, ApprovalStatus.REVOKED),
    ],
)
def test_allowed_transitions(current: Status, new: Status) -> None:
    ensure_transition("run x", current, new)


@given(st.sampled_from([Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.SKIPPED]), st.sampled_from(Status))
def test_final_statuses_never_change(current: Status, new: Status) -> None:
    if new == current:
        ensure_transition("step", current, new)
        return
    with pytest.raises(ConflictError, match=f"cannot go from {current} to {new}"):
        ensure_transition("step", current, new)
    assert current.is_final


def test_running_cannot_go_back_to_pending() -> None:
    with pytest.raises(ConflictError) as info:
        ensure_transition("run 1", Status.RUNNING, Status.PENDING)
    assert info.value.details == {"from": "running", "to": "pending"}


def test_mixing_vocabularies_is_a_conflict() -> None:
    with pytest.raises(ConflictError, match="not a DeploymentStatus"):
        ensure_transition("deployment", DeploymentStatus.ACTIVE, Status.SUCCESS)

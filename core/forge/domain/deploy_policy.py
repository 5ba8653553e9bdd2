"""The promotion policy of one deployment: may this release go to this environment now?

The rules come from the ``environments`` of ``.forge/repo.yaml`` at the released commit, carried by the
discovery of the run that made the release (``DiscoveryResult.deploys``, one ``DeployIntent`` per
environment). A release recorded without such a discovery (no run, or a run discovered before deploy
intents existed) gets the default environments: ``dev`` takes everything, ``staging`` and
``production`` need an approval. The API checks the policy when a deployment is asked for (409 with
the reason), and the controller checks it again right before it writes the pointer, so an approval
that expired or was revoked in between fails the deployment instead of deploying.
"""

from __future__ import annotations

from datetime import datetime

from forge.domain.config import RepoConfig
from forge.domain.discovery import DeployIntent, DiscoveryResult
from forge.domain.entities import Approval, Release
from forge.domain.status import ApprovalStatus
from forge.errors import ConflictError, InvalidInputError

__all__ = ["check_policy", "deploy_intent", "environments_of"]


def environments_of(discovery: DiscoveryResult | None, project: str) -> list[DeployIntent]:
    """The project's intents from ``discovery``; the default environments when it holds none."""
    found = [i for i in (discovery.deploys if discovery is not None else []) if i.project == project]
    if found:
        return found
    defaults = sorted(RepoConfig().environments.items(), key=lambda item: (item[1].order, item[0]))
    return [
        DeployIntent(
            project=project,
            environment=name,
            order=env.order,
            allowed=True,
            auto=False,  # never deploy by itself what no discovery asked for
            requires_approval=env.requires_approval,
            reason="default environments (no deploy intents were recorded for this release)",
        )
        for name, env in defaults
    ]


def deploy_intent(release: Release, discovery: DiscoveryResult | None, environment: str) -> DeployIntent:
    """The rules for deploying ``release`` to ``environment``; ``InvalidInputError`` naming the known
    environments when the repository has no such environment."""
    intents = environments_of(discovery, release.project)
    for intent in intents:
        if intent.environment == environment:
            return intent
    known = ", ".join(i.environment for i in intents)
    raise InvalidInputError(
        f"{release.repository} has no environment {environment!r}; its environments are: {known}",
        details={"field": "environment", "environment": environment, "known": [i.environment for i in intents]},
    )


def check_policy(release: Release, intent: DeployIntent, approval: Approval | None, now: datetime) -> None:
    """``ConflictError`` with the reason when ``release`` may not be deployed by ``intent``'s rules now:
    the environment does not take the release, or it needs an approval and ``approval`` is not an active,
    unexpired approval of this release for this environment."""
    what = f"release {release.number} of {release.repository}/{release.project}"
    if not intent.allowed:
        raise ConflictError(
            f"{what} cannot be deployed to {intent.environment}: {intent.reason}",
            details={"environment": intent.environment, "reason": "not_allowed"},
            code="deploy_not_allowed",
        )
    if not intent.requires_approval:
        return
    valid = (
        approval is not None
        and approval.release_id == release.id
        and approval.environment == intent.environment
        and approval.status is ApprovalStatus.ACTIVE
        and approval.expires_at > now
    )
    if not valid:
        raise ConflictError(
            f"{intent.environment} needs an active, unexpired approval of {what} and there is none "
            f"(an approver runs: forge approve {release.repository} {release.project} {release.number} "
            f"--env {intent.environment} --justification ...)",
            details={"environment": intent.environment, "reason": "approval_required"},
            code="approval_required",
        )

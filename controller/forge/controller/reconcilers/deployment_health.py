"""Argo CD health of deployments whose pointer is committed (issue 9 item 4; docs/gitops.md, "Argo CD health").

With Argo CD configured (``FORGE_ARGOCD__ENABLED``), the :class:`DeploymentReconciler` does not
make a deployment ``active`` when its pointer commit is pushed: it hands it here, still ``pending``,
and this follower (run from the reconciler's own loop, so the reconciler stays the one writer of
deployment status) reads the app's Application every ``poll`` seconds until a verdict:

- **active** when the Application is ``Synced`` and ``Healthy`` at a ``status.sync.revision`` that
  *contains* the pointer commit: that commit itself or a descendant on the GitOps branch
  (``RevisionHistory.contains``). Argo CD reports the branch head it compared with, which is often
  a later commit of another app, so equality would miss most deployments in a busy repository;
  an older revision (the pointer not seen yet) only means "not yet";
- **failed** when, at such a revision, it is ``Synced`` and ``Degraded`` (the cause carries
  ``status.health.message`` and the last sync's ``operationState.message``), or when the last sync
  operation of a revision containing the commit ended ``Failed``/``Error``;
- **failed** when ``timeout`` seconds pass after the commit (by the store's clock) without either
  (the cause says what was seen last), or when the API refuses our credentials (401/403, ``PermanentError``);
- otherwise **pending**: ``Progressing``, ``OutOfSync``, an Application not created yet (404: the
  environment's app-of-apps creates it after the commit) and an API or GitOps remote that is down
  (``TransientError``) are all "look again later".

Until the verdict the previous active deployment stays active. The watch list is the store's, not
this process's: the reconciler records the pointer commit on the pending deployment
(``DeploymentStore.record_pointer``, which also stops it being claimed again) and every ``follow``
reads the committed pending deployments (``committed_deployments``). A controller that restarts
(or another one, after a leader change) follows them at once, and the timeout runs from the
commit time the store recorded, not from the restart. Only the poll schedule and what was seen
last live in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from forge.domain.entities import Deployment
from forge.errors import ConflictError, NotFoundError, PermanentError, TransientError
from forge.gitops import AppLocation
from forge.ports.deployer import ApplicationStatus, DeployerStatus, Health, OperationPhase, RevisionHistory, Sync
from forge.ports.store import CommittedDeployment, DeploymentStore

__all__ = ["DeploymentHealth", "Verdict", "judge"]

log = logging.getLogger("forge.controller.deployments")


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Literal["active", "failed", "pending"]
    cause: str


def judge(app: ApplicationStatus, *, synced_contains: bool, operation_contains: bool) -> Verdict:
    """The verdict on one Application (module docstring); ``*_contains``: whether ``app.revision`` /
    ``app.operation_revision`` contain the pointer commit."""
    where = f"Argo CD Application {app.name}"
    health = f"{app.health}" + (f": {app.health_message}" if app.health_message else "")
    operation = f"last sync {app.operation}: {app.operation_message}" if app.operation_message else None
    if operation_contains and app.operation in (OperationPhase.FAILED, OperationPhase.ERROR):
        cause = f"{where}: the sync of {_short(app.operation_revision)} failed: {app.operation_message or 'no message'}"
        return Verdict("failed", f"{cause} (health {health})")
    if synced_contains and app.sync is Sync.SYNCED:
        if app.health is Health.HEALTHY:
            return Verdict("active", f"{where} is Synced and Healthy at {_short(app.revision)}")
        if app.health is Health.DEGRADED:
            cause = f"{where} is Degraded at {_short(app.revision)}: {app.health_message or 'no message'}"
            return Verdict("failed", cause + (f"; {operation}" if operation else ""))
    seen = f"{where}: {app.sync} at {_short(app.revision)}, health {health}"
    return Verdict("pending", seen + ("" if synced_contains else " (the pointer commit is not synced yet)"))


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "no revision"


@dataclass
class _Watch:
    deployment: Deployment
    commit: str
    application: str
    waited: float
    """Seconds since the pointer commit, by the store's clock (read again on every ``follow``)."""
    next_check: float
    last: str = "nothing read yet"


@dataclass
class DeploymentHealth:
    deployments: DeploymentStore
    deployer: DeployerStatus
    revisions: RevisionHistory
    timeout: float = 600.0
    """Seconds after the pointer commit before a deployment not yet Synced and Healthy fails."""
    poll: float = 5.0
    """Seconds between two reads of one Application."""
    clock: Callable[[], float] = time.monotonic
    """Spaces the polls; the timeout runs by the store's clock, from the commit it recorded."""
    batch: int = 500
    """Committed deployments read from the store per ``follow`` (longest-waiting first)."""
    _watching: dict[UUID, _Watch] = field(default_factory=dict, init=False, repr=False)
    """The poll schedule and last sight of each followed deployment (the list itself is the store's)."""

    async def follow(self) -> list[Deployment]:
        """Look at every committed pending deployment whose poll is due, longest-waiting first; the deployments
        that ended. Store outages propagate (the deployments stay pending, followed on the next call)."""
        committed = await self.deployments.committed_deployments(limit=self.batch)
        watches = [self._watch(c) for c in committed]
        current = {w.deployment.id for w in watches}
        for gone in [i for i in self._watching if i not in current]:  # ended elsewhere (or beyond the batch)
            del self._watching[gone]
        ended: list[Deployment] = []
        for watch in watches:
            now = self.clock()
            if now < watch.next_check:
                continue
            watch.next_check = now + self.poll
            verdict = await self._look(watch)
            if verdict.outcome == "pending":
                watch.last = verdict.cause
                if watch.waited < self.timeout:
                    continue
                verdict = Verdict(
                    "failed",
                    f"not Synced and Healthy at a revision containing GitOps commit {watch.commit[:12]} within "
                    f"{self.timeout:g} s; last seen: {watch.last}",
                )
            done = await self._record(watch, verdict)
            self._watching.pop(watch.deployment.id, None)
            if done is not None:
                ended.append(done)
        return ended

    def _watch(self, committed: CommittedDeployment) -> _Watch:
        deployment = committed.deployment
        watch = self._watching.get(deployment.id)
        if watch is not None and watch.commit == deployment.gitops_commit:
            watch.waited = committed.waited
            return watch
        now = self.clock()
        name = AppLocation(deployment.environment, deployment.repository, deployment.project).application_name
        commit = deployment.gitops_commit or ""
        watch = _Watch(deployment, commit, name, waited=committed.waited, next_check=now)
        self._watching[deployment.id] = watch
        log.info(
            "deployment %s: waiting for Argo CD Application %s at %s (committed %.0f s ago)",
            deployment.id,
            name,
            commit[:12],
            committed.waited,
        )
        return watch

    async def _look(self, watch: _Watch) -> Verdict:
        try:
            app = await self.deployer.application(watch.application)
            synced = app.revision is not None and await self.revisions.contains(app.revision, watch.commit)
            failed_op = app.operation in (OperationPhase.FAILED, OperationPhase.ERROR)
            applied = failed_op and app.operation_revision is not None
            applied = applied and await self.revisions.contains(app.operation_revision or "", watch.commit)
        except NotFoundError:
            return Verdict("pending", f"Argo CD Application {watch.application} does not exist yet")
        except TransientError as exc:
            log.warning("deployment %s: cannot read its health yet: %s", watch.deployment.id, exc)
            return Verdict("pending", f"Argo CD Application {watch.application} could not be read: {exc}")
        except PermanentError as exc:
            return Verdict("failed", f"Argo CD Application {watch.application} cannot be read: {exc}")
        return judge(app, synced_contains=synced, operation_contains=applied)

    async def _record(self, watch: _Watch, verdict: Verdict) -> Deployment | None:
        d = watch.deployment
        async with self.deployments.deployment_lock(d.environment, d.repository, d.project):
            try:
                if verdict.outcome == "active":
                    done = await self.deployments.complete_deployment(d.id, watch.commit)
                    log.info(
                        "%s/%s release %d is active in %s (gitops commit %s): %s",
                        d.repository,
                        d.project,
                        d.release_number,
                        d.environment,
                        watch.commit,
                        verdict.cause,
                    )
                    return done
                log.error(
                    "deployment of %s/%s release %d to %s failed: %s",
                    d.repository,
                    d.project,
                    d.release_number,
                    d.environment,
                    verdict.cause,
                )
                return await self.deployments.fail_deployment(d.id, verdict.cause)
            except ConflictError as exc:  # finished elsewhere meanwhile: nothing left to follow
                log.warning("deployment %s: %s", d.id, exc)
                return None

"""Deployments: releases become ReleasePointer commits in the GitOps repository (DESIGN §1, §4, §8).

Every ``interval`` the reconciler

1. **plans automatic deployments**: for each release whose deployments are not planned yet
   (``DeploymentStore.releases_to_deploy``, oldest first), the deploy intents its run's discovery
   recorded (``.forge/repo.yaml`` ``environments``: ``auto_deploy`` and the release's branch or tag
   matching) become pending deployments requested by the controller's own identity; then the
   release is marked planned (a crash in between only asks again, and asking is idempotent);
2. **deploys pending deployments** (``claim_deployments``, each handed to one controller): under the
   app's lock (``deployment_lock``: a PostgreSQL advisory lock per (environment, repository, project),
   so two deploys of one app never interleave across machines) it reads the deployment again,
   checks the promotion policy again (an approval that expired or was revoked since the request
   fails the deployment instead of deploying), writes the pointer with ``GitOpsWriter.deploy`` (the
   commit message names release number, commit, digest, environment, actor and reason) and records
   the GitOps commit: the deployment becomes ``active`` and the previous active one ``superseded``.

With no Argo CD health port configured (the embedded platform), a deployment is ``active`` as soon
as its pointer commit is pushed; with one (``health``), it stays ``pending`` with its commit recorded
(``record_pointer``: claimed no more) and
:class:`~forge.controller.reconcilers.deployment_health.DeploymentHealth`, run from this loop, follows
the store's committed deployments and makes each ``active`` or ``failed`` by its Argo CD Application.
``TransientError`` (the GitOps remote down, a push race that kept losing, PostgreSQL away) is
retried with backoff for at most ``deploy_timeout`` seconds, then the deployment fails with the
cause; a ``PermanentError`` fails it at once. A failed deployment never touches the active one.

A claim is a lease (:mod:`forge.controller.leases`): renewed every third of ``claim_lease`` while its
deployment is deployed (through a long retried write too) and once more before each write (the
pointer, the commit, a failure). A deployment whose controller died is claimed by another one after
``claim_lease`` seconds (30 s); if the dead one had pushed the pointer, the writer finds it already
at the digest and records it. A controller whose claim was taken over (it could not renew in time)
stops and writes nothing for that deployment; the app lock keeps the new holder from writing
before it has stopped. A controller that stops (``stop`` set, or ``run`` cancelled) hands back the
claims of the deployments it has not finished (the one it was deploying, and those held for the
next tick), so another controller deploys them at once instead of after ``claim_lease``.

Each deployment written is one ``deployment.deploy`` span, in the trace of the run that made the
release (trace id = run id, ``forge.observability.tracing``) when there is one; the writer's
``gitops.commit`` span (the pointer commit) is its child.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import stamina
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import ValidationError

from forge.controller.leases import ClaimLost, Claims, hand_back, holding
from forge.controller.reconcilers.deployment_health import DeploymentHealth
from forge.domain.deploy_policy import check_policy, deploy_intent, environments_of
from forge.domain.discovery import DiscoveryResult
from forge.domain.entities import Deployment, Release
from forge.domain.status import DeploymentStatus
from forge.errors import ForgeError, InvalidInputError, NotFoundError, PermanentError, TransientError
from forge.gitops import GitOpsWriter, PointerChange
from forge.observability.tracing import parent_for, tracer
from forge.ports import RunStore
from forge.ports.store import ApprovalStore, DeploymentStore, NewDeployment, ReleaseStore
from forge.retrying import transient
from forge.runtime import instance_id

__all__ = ["CONTROLLER_IDENTITY", "DeploymentReconciler"]

log = logging.getLogger("forge.controller.deployments")

CONTROLLER_IDENTITY = "forge-controller"
"""Who automatic deployments are requested by (``deployed_by``)."""


@dataclass
class DeploymentReconciler:
    deployments: DeploymentStore
    approvals: ApprovalStore
    releases: ReleaseStore
    runs: RunStore
    writer: GitOpsWriter
    identity: str = CONTROLLER_IDENTITY
    interval: float = 0.5
    batch: int = 20
    deploy_timeout: float = 600.0
    """Seconds one deployment's transient failures are retried before it fails (``timeouts.deploy``)."""
    backoff_max: float = 10.0
    claim_lease: float = 30.0
    """Seconds a claimed deployment stays this controller's unrenewed (``FORGE_CONTROLLER__CLAIM_LEASE``)."""
    claimer: str = field(default_factory=instance_id)
    """This controller instance, as its claims name it."""
    health: DeploymentHealth | None = None
    """Argo CD health (``FORGE_ARGOCD__ENABLED``): written deployments wait there for their verdict."""
    _held: dict[UUID, Deployment] = field(default_factory=dict, init=False, repr=False)
    """Claimed deployments not finished yet because the store was unavailable: tried again first, handed
    back when the reconciler stops."""

    async def run(self, stop: asyncio.Event) -> None:
        """Plan and deploy every ``interval`` until ``stop``; then, or when cancelled, hand back the claims
        of the deployments held unfinished."""
        try:
            while not stop.is_set():
                try:
                    await self.plan_auto_deploys()
                    await self.deploy_pending()
                    if self.health is not None:
                        await self.health.follow()
                except TransientError as exc:
                    log.warning("deployments wait for a service: %s", exc)
                except ForgeError as exc:
                    log.error("deployments: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.hand_back_held()

    async def hand_back_held(self) -> None:
        """Release the claims on the deployments held unfinished (another controller takes them at once)."""
        held, self._held = sorted(self._held), {}
        release = functools.partial(self.deployments.release_deployment_claims, claimer=self.claimer)
        await hand_back(release, held, what="deployment")

    async def plan_auto_deploys(self) -> list[Deployment]:
        """Request the automatic deployments of every release not planned yet; the deployments asked for."""
        asked: list[Deployment] = []
        for release in await self.deployments.releases_to_deploy(limit=self.batch):
            discovery = await self._discovery(release)
            origin = f"branch {release.branch}" if release.branch else f"tag {release.tag}" if release.tag else "a run"
            for intent in environments_of(discovery, release.project):
                if not intent.auto:
                    continue
                deployment, created = await self.deployments.request_deployment(
                    NewDeployment(
                        release_id=release.id,
                        environment=intent.environment,
                        requested_by=self.identity,
                        reason=f"auto-deploy: release {release.number} on {origin}",
                    )
                )
                if created:
                    log.info(
                        "auto-deploy of %s/%s release %d to %s requested",
                        release.repository,
                        release.project,
                        release.number,
                        intent.environment,
                    )
                asked.append(deployment)
            await self.deployments.mark_deploys_planned(release.id)
        return asked

    async def deploy_pending(self) -> list[Deployment]:
        """Deploy what is claimed (held first, then newly claimed); the deployments as they ended (not those
        whose claim was taken over)."""
        claimed = await self.deployments.claim_deployments(
            limit=self.batch, claimer=self.claimer, lease=self.claim_lease
        )
        for deployment in claimed:
            self._held[deployment.id] = deployment
        done: list[Deployment] = []
        for deployment in list(self._held.values()):
            ended = await self.deploy(deployment)
            if ended is not None:
                done.append(ended)
            self._held.pop(deployment.id, None)
        return done

    async def deploy(self, deployment: Deployment) -> Deployment | None:
        """Take one claimed deployment to ``active`` or ``failed``, or with ``health`` leave it pending with
        its pointer commit recorded; ``None`` when its claim was taken over: nothing written (store outages
        propagate: it stays held, tried again on the next tick, its claim handed back meanwhile if the store
        answers). The claim is renewed while this runs and checked before each write."""
        renew = functools.partial(self.deployments.renew_deployment_claims, claimer=self.claimer)
        release = functools.partial(self.deployments.release_deployment_claims, claimer=self.claimer)
        try:
            async with holding(
                renew, [deployment.id], release=release, lease=self.claim_lease, what="deployment"
            ) as claims:
                return await self._deploy(deployment, claims)
        except ClaimLost:
            return None

    async def _deploy(self, deployment: Deployment, claims: Claims) -> Deployment:
        async with self.deployments.deployment_lock(deployment.environment, deployment.repository, deployment.project):
            current = await self.deployments.get_deployment(deployment.id)
            if current.status is not DeploymentStatus.PENDING or current.gitops_commit is not None:
                return current  # ended, or its pointer recorded (health decides): claimed no more
            await claims.check(current.id)
            try:
                release = await self.releases.get_release(
                    current.repository, current.project, str(current.release_number)
                )
            except PermanentError as exc:
                return await self._fail(current, str(exc), claims)
            with self._span(current, release) as span:
                try:
                    sha = await self._write(current, release, claims)
                except PermanentError as exc:
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    return await self._fail(current, str(exc), claims)
                except TransientError as exc:
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    return await self._fail(current, f"gave up after {self.deploy_timeout:g} s: {exc}", claims)
                span.set_attribute("forge.gitops.commit", sha)
                await claims.check(current.id)
                if self.health is not None:
                    return await self.deployments.record_pointer(current.id, sha)
                active = await self.deployments.complete_deployment(current.id, sha)
        log.info(
            "%s/%s release %d is active in %s (gitops commit %s)",
            active.repository,
            active.project,
            active.release_number,
            active.environment,
            sha,
        )
        return active

    @contextlib.contextmanager
    def _span(self, deployment: Deployment, release: Release) -> Iterator[Span]:
        """``deployment.deploy``: in the trace of the run that made the release, else a trace of its own."""
        parent = parent_for(release.run_id) if release.run_id is not None else None
        attributes: dict[str, str | int] = {
            "forge.deployment_id": str(deployment.id),
            "forge.environment": deployment.environment,
            "forge.repository": deployment.repository,
            "forge.project": deployment.project,
            "forge.release.number": deployment.release_number,
        }
        if release.run_id is not None:
            attributes["forge.run_id"] = str(release.run_id)
        with tracer().start_as_current_span("deployment.deploy", context=parent, attributes=attributes) as span:
            yield span

    async def _write(self, deployment: Deployment, release: Release, claims: Claims) -> str:
        """Check the policy again and write the pointer; the GitOps commit that holds it. Each attempt
        checks the claim first (``ClaimLost`` is not retried)."""
        if release.id != deployment.release_id:  # pragma: no cover - numbers are immutable
            raise InvalidInputError(f"release {deployment.release_number} is not the release deployment asked for")
        intent = deploy_intent(release, await self._discovery(release), deployment.environment)
        approval = None
        if intent.requires_approval:
            approval = await self.approvals.active_approval(release.id, deployment.environment)
        check_policy(release, intent, approval, datetime.now(UTC))
        try:
            change = PointerChange(
                environment=deployment.environment,
                repository=deployment.repository,
                project=deployment.project,
                release_number=release.number,
                commit=release.commit_sha,
                digest=release.oci_digest,
                actor=deployment.deployed_by,
                reason=deployment.reason,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"the pointer cannot be written: {where}: {first['msg']}") from exc
        attempts = stamina.retry_context(
            on=transient, attempts=None, timeout=self.deploy_timeout, wait_max=self.backoff_max
        )
        sha: str | None = None
        async for attempt in attempts:
            with attempt:
                await claims.check(deployment.id)
                try:
                    sha = (await self.writer.deploy(change)).sha
                except TransientError as exc:
                    log.warning("deployment %s: GitOps write failed, retrying: %s", deployment.id, exc)
                    raise
        if sha is None:  # no commit needed on a branch that does not exist: nothing can point there
            raise NotFoundError("the GitOps branch does not exist, so nothing can point at the release")
        return sha

    async def _fail(self, deployment: Deployment, cause: str, claims: Claims) -> Deployment:
        await claims.check(deployment.id)
        log.error(
            "deployment of %s/%s release %d to %s failed: %s",
            deployment.repository,
            deployment.project,
            deployment.release_number,
            deployment.environment,
            cause,
        )
        return await self.deployments.fail_deployment(deployment.id, cause)

    async def _discovery(self, release: Release) -> DiscoveryResult | None:
        if release.run_id is None:
            return None
        try:
            run = await self.runs.get_run(release.run_id)
        except NotFoundError:
            return None
        return run.discovery

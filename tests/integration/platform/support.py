"""Test-side helpers shared by the worker and step-container tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.postgres_store import PostgresStore
from forge.api.services import ApiServices, ClonePolicy
from forge.domain.messages import Job
from forge.ports import IdentityProvider, MessageBus, ObjectStore
from forge.settings import WorkerSettings
from forge.testing.oidc import shared_issuer
from forge.workflows.workers.discovery import DiscoveryHandler

FAST = WorkerSettings(concurrency=2, ack_wait=2.0, heartbeat=0.5, max_deliver=2, fetch_wait=0.2)
PROJECT = "name: {name}\nphases:\n  test:\n    steps:\n      - name: unit\n        run: 'true'\n"


@dataclass
class Counting:
    """Counts how often the real discovery handler runs."""

    inner: DiscoveryHandler
    calls: list[str] = field(default_factory=list)

    async def __call__(self, job: Job) -> dict[str, Any]:
        self.calls.append(job.key)
        return await self.inner(job)


def api_services(
    store: PostgresStore,
    bus: MessageBus,
    objects: ObjectStore,
    secrets: EnvSecretProvider | None = None,
    clones: ClonePolicy | None = None,
    identity: IdentityProvider | None = None,
) -> ApiServices:
    """The API's services on one PostgreSQL store, as ``forge-api`` builds them.

    Tokens are verified against the session's test issuer (``forge.testing.oidc``); clients send
    :func:`auth_headers` by default.
    """
    return ApiServices(
        database=store,
        repositories=store,
        runs=store,
        executions=store,
        releases=store,
        deployments=store,
        approvals=store,
        bus=bus,
        objects=objects,
        secrets=secrets or EnvSecretProvider(environ={}),
        clones=clones or ClonePolicy(),
        identity=identity or shared_issuer().provider(),
    )


def auth_headers(roles: tuple[str, ...] = ("developer", "approver", "operator", "service-account")) -> dict[str, str]:
    """``Authorization: Bearer`` with a fresh token of the test issuer holding ``roles`` (every role by default)."""
    return shared_issuer().headers(roles)

"""Leader election of ``forge-controller`` on a ``coordination.k8s.io/v1`` Lease.

Two controller replicas run; one holds the Lease and runs the reconcilers, the other waits warm
(connected, not reconciling) and takes over when the leader stops renewing. The algorithm is
client-go's ``leaderelection`` with a ``LeaseLock``:

* **Acquire or renew** (``LeaderElector.try_acquire_or_renew``): read the Lease; absent → create
  it naming us; held by someone else whose record has not *changed* for its
  ``leaseDurationSeconds`` (measured on our own monotonic clock from when we first saw that
  record, never by comparing their ``renewTime`` with our wall clock: clocks of two nodes
  disagree) → replace it naming us (``leaseTransitions`` + 1); held by us → replace it with a new
  ``renewTime``. Every replace carries the ``resourceVersion`` read, so of two candidates racing
  for an expired Lease the API server accepts one and answers the other ``409 Conflict``.
* **Step down before anyone else may take over**: a leader that has not renewed for
  ``renew_deadline`` (< ``lease_duration``) stops its reconcilers, and cancels them if they have
  not stopped ``lease_duration - renew_deadline`` seconds later, the time left before a
  candidate may see the Lease as expired. A leader that reads another holder in the Lease stops
  at once. It then becomes a candidate again (the reconcilers start from the database on their
  next term, as after a restart).
* **Release on stop**: SIGTERM stops the reconcilers, then the Lease is written with no holder
  and a 1 s duration, so the standby takes over on its next attempt instead of waiting out the
  lease (a rolling update costs ``retry_period``, not ``lease_duration``).

Clocks and sleeps are injected (``clock`` monotonic seconds for every decision, ``now`` the wall
time written into the record, ``sleep`` the pause between attempts), so the tests step time
instead of waiting for it. The ``kubernetes`` client is synchronous; its calls run in
``asyncio.to_thread`` with a request timeout of half the renew deadline, and the package is
imported only when leader election is on (it costs the embedded platform's start 0.25 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from forge.errors import ConflictError, ForgeError, InvalidInputError, PermanentError, TransientError
from forge.settings import ControllerSettings

__all__ = [
    "KubernetesLeases",
    "LeaderElector",
    "LeaseRecord",
    "LeaseStore",
    "run_as_leader",
]

log = logging.getLogger("forge.controller.leader")

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The election fields of a Lease's ``spec``, and the ``resourceVersion`` they were read at."""

    holder: str | None
    lease_duration: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None

    def same_election(self, other: LeaseRecord | None) -> bool:
        """Whether ``other`` says the same as this record (the resource version aside)."""
        return other is not None and replace(self, resource_version=None) == replace(other, resource_version=None)


class LeaseStore(Protocol):
    """One Lease object: read, create, replace by resource version (a stale one → ``ConflictError``)."""

    async def get(self) -> LeaseRecord | None: ...

    async def create(self, record: LeaseRecord) -> LeaseRecord: ...

    async def replace(self, record: LeaseRecord) -> LeaseRecord: ...


class KubernetesLeases:
    """``LeaseStore`` on the Kubernetes API with the ``kubernetes`` package (``CoordinationV1Api``)."""

    def __init__(self, api: Any, *, namespace: str, name: str, request_timeout: float = 5.0) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self._timeout = request_timeout

    @classmethod
    def connect(
        cls, api_client: Any = None, *, namespace: str, name: str, request_timeout: float = 5.0
    ) -> KubernetesLeases:
        """Leases through ``api_client``; none given: the in-cluster service account, else kubeconfig."""
        from kubernetes import client, config

        if api_client is None:
            loader: Any = config  # its loaders are untyped
            try:
                loader.load_incluster_config()
            except config.ConfigException:
                loader.load_kube_config()
            api_client = client.ApiClient()
        api = client.CoordinationV1Api(api_client)
        return cls(api, namespace=namespace, name=name, request_timeout=request_timeout)

    def close(self) -> None:
        self._api.api_client.close()

    async def get(self) -> LeaseRecord | None:
        try:
            lease = await self._call("read_namespaced_lease", self.name, self.namespace)
        except _NotFoundError:
            return None
        return _record(lease)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        return _record(await self._call("create_namespaced_lease", self.namespace, self._lease(record)))

    async def replace(self, record: LeaseRecord) -> LeaseRecord:
        return _record(await self._call("replace_namespaced_lease", self.name, self.namespace, self._lease(record)))

    def _lease(self, record: LeaseRecord) -> Any:
        from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta

        return V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=V1ObjectMeta(name=self.name, namespace=self.namespace, resource_version=record.resource_version),
            spec=V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.lease_duration,
                acquire_time=_micro(record.acquire_time),
                renew_time=_micro(record.renew_time),
                lease_transitions=record.transitions,
            ),
        )

    async def _call(self, method: str, *args: Any) -> Any:
        """One API call in a thread, its failures translated into the error tree."""
        from kubernetes.client.exceptions import ApiException

        call = getattr(self._api, method)
        try:
            return await asyncio.to_thread(call, *args, _request_timeout=self._timeout)
        except ApiException as exc:
            where = f"Lease {self.namespace}/{self.name}"
            if exc.status == 404:
                raise _NotFoundError(f"{where} not found") from exc
            if exc.status == 409:
                raise ConflictError(f"{where} changed since it was read (409)") from exc
            if exc.status in {401, 403}:
                raise PermanentError(f"{where}: {exc.status} {exc.reason}: check the controller's RBAC") from exc
            raise TransientError(f"{where}: {exc.status} {exc.reason}") from exc
        except (OSError, ValueError) as exc:  # urllib3's errors derive from these
            raise TransientError(f"Lease {self.namespace}/{self.name}: {type(exc).__name__}: {exc}") from exc


class _NotFoundError(PermanentError):
    pass


def _record(lease: Any) -> LeaseRecord:
    spec = lease.spec
    return LeaseRecord(
        holder=spec.holder_identity or None,
        lease_duration=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
        resource_version=lease.metadata.resource_version,
    )


def _micro(value: datetime | None) -> datetime | None:
    """Kubernetes parses a MicroTime with exactly six fraction digits, and ``isoformat`` drops a
    zero fraction: a time on a whole second is moved by one microsecond."""
    if value is None or value.microsecond:
        return value
    return value.replace(microsecond=1)


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class LeaderElector:
    """Acquires and renews one Lease for ``identity``; ``run`` runs a callable only while leader."""

    def __init__(
        self,
        leases: LeaseStore,
        *,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = _real_sleep,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise InvalidInputError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{retry_period} < {renew_deadline} < {lease_duration}"
            )
        if not identity:
            raise InvalidInputError("leader election needs a non-empty identity")
        self._leases = leases
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._leading = False

    @property
    def is_leader(self) -> bool:
        """Whether the last attempt acquired or renewed the Lease."""
        return self._leading

    @property
    def observed_holder(self) -> str | None:
        """The holder the Lease named when it was last read or written."""
        return self._observed.holder if self._observed else None

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards. Failures are logged, never raised."""
        try:
            self._leading = await self._attempt()
        except ConflictError as exc:
            log.debug("lost a race for the lease: %s", exc)
            self._leading = False
        except ForgeError as exc:
            log.warning("could not read or write the lease: %s", exc)
            self._leading = False
        return self._leading

    async def _attempt(self) -> bool:
        duration = math.ceil(self.lease_duration)
        current = await self._leases.get()
        now = self._now()
        if current is None:
            self._observe(
                await self._leases.create(
                    LeaseRecord(self.identity, duration, acquire_time=now, renew_time=now, transitions=0)
                )
            )
            return True
        self._observe(current)
        ours = current.holder == self.identity
        if not ours and current.holder and not self._expired(current):
            return False
        record = LeaseRecord(
            self.identity,
            duration,
            acquire_time=current.acquire_time if ours else now,
            renew_time=now,
            transitions=current.transitions if ours else current.transitions + 1,
            resource_version=current.resource_version,
        )
        self._observe(await self._leases.replace(record))
        return True

    def _observe(self, record: LeaseRecord) -> None:
        if not record.same_election(self._observed):
            self._observed_at = self._clock()
        self._observed = record

    def _expired(self, record: LeaseRecord) -> bool:
        duration = record.lease_duration or self.lease_duration
        return self._observed_at + duration <= self._clock()

    async def release(self) -> None:
        """Give the Lease up (no holder, 1 s) if we hold it, so a standby takes over at once."""
        if not self._leading or self._observed is None:
            return
        self._leading = False
        record = replace(self._observed, holder=None, lease_duration=1, renew_time=self._now())
        try:
            self._observe(await self._leases.replace(record))
        except ForgeError as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)
        else:
            log.info("released the lease")

    async def run(self, lead: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
        """Until ``stop``: acquire the Lease, run ``lead(stepping_down)`` while we hold it, and set
        ``stepping_down`` when we lose it; then try again. ``lead`` returning by itself ends ``run``."""
        try:
            while not stop.is_set():
                if not await self.try_acquire_or_renew():
                    await self._pause(self.retry_period, stop)
                    continue
                log.info("%s is the leader (lease held by %s)", self.identity, self.observed_holder)
                if await self._lead(lead, stop):
                    return
                log.warning("%s stepped down; candidate again", self.identity)
        finally:
            await self.release()

    async def _lead(self, lead: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> bool:
        """One term: True when it ended because of ``stop`` or because ``lead`` returned."""
        stepping_down = asyncio.Event()
        task = asyncio.ensure_future(lead(stepping_down))
        try:
            lost = await self._renew_until_lost(task, stop)
            stepping_down.set()
            if lost:
                self._leading = False
                await self._pause(self.lease_duration - self.renew_deadline, task)
                if not task.done():
                    log.error("reconcilers did not stop before the lease expires; cancelling them")
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return not lost
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _renew_until_lost(self, task: asyncio.Future[None], stop: asyncio.Event) -> bool:
        """Renew every ``retry_period``; True when leadership is lost, False on stop or ``lead``'s end."""
        renewed_at = self._clock()
        while True:
            await self._pause(self.retry_period, stop, task)
            if stop.is_set() or task.done():
                return False
            if await self.try_acquire_or_renew():
                renewed_at = self._clock()
                continue
            if self.observed_holder not in {None, self.identity}:
                log.warning("the lease is now held by %s", self.observed_holder)
                return True
            if self._clock() - renewed_at >= self.renew_deadline:
                log.warning("could not renew the lease for %.1fs", self._clock() - renewed_at)
                return True

    async def _pause(self, seconds: float, *until: asyncio.Event | asyncio.Future[None]) -> None:
        """Sleep ``seconds`` (the injected sleep), or less when an event is set or a task ends."""
        if any(item.is_set() if isinstance(item, asyncio.Event) else item.done() for item in until):
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        event_waits = [asyncio.ensure_future(item.wait()) for item in until if isinstance(item, asyncio.Event)]
        tasks = [item for item in until if not isinstance(item, asyncio.Event)]
        waits: set[asyncio.Future[Any]] = {sleeper, *event_waits, *tasks}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            for wait in event_waits:
                wait.cancel()


def _default_identity() -> str:
    """``POD_NAME`` (the downward API), else the host name (a pod's name too)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def _default_namespace() -> str:
    """The pod's namespace from its service account, else ``forge``."""
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "forge"
    except OSError:
        return "forge"


@contextlib.asynccontextmanager
async def _elector(settings: ControllerSettings) -> AsyncIterator[LeaderElector]:
    leases = KubernetesLeases.connect(
        namespace=settings.lease_namespace or _default_namespace(),
        name=settings.lease_name,
        request_timeout=settings.renew_deadline / 2,
    )
    try:
        yield LeaderElector(
            leases,
            identity=settings.identity or _default_identity(),
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
        )
    finally:
        leases.close()


async def run_as_leader(
    settings: ControllerSettings, lead: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    """``lead(stop)`` at once when leader election is off; else only while this process holds the Lease."""
    if not settings.leader_election:
        await lead(stop)
        return
    async with _elector(settings) as elector:
        log.info(
            "leader election on Lease %s as %s",
            settings.lease_name,
            elector.identity,
        )
        await elector.run(lead, stop)

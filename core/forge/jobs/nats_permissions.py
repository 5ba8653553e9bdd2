"""Who may do what on NATS: the users and subject permissions of the platform's ``authorization`` block.

Every client logs in with its own user (:func:`users`, the nats-server ``authorization.users`` list the
Kubernetes platform's NATS release carries, gitops/platform/apps/base/nats.yaml); each user's allow lists are
derived from what that client does, so anything else is refused by the server (a permissions violation):

* ``forge-controller`` (:func:`controller_permissions`): the streams, every pool's consumers, step events,
  discovery jobs and cancels;
* ``forge-api`` (:func:`api_permissions`): nothing but the connection (its health check is a PING);
* ``forge-step`` (:func:`step_permissions`): ``forge-step dispatch`` in the Argo step pods, which publishes a
  step's job on its repository's pool and waits for the result;
* ``forge-worker-<pool>`` (:func:`pool_permissions`), one per worker pool, ``default`` included: a worker of
  the pool, which cannot touch another pool's jobs.

Each client receives its replies (JetStream API answers, pulled messages, a dispatcher's results) on inboxes
of its own, the connection's inbox prefix, and may subscribe there only: ``_INBOX.<pool>`` for a pool's
workers (:func:`inbox_prefix`), :data:`CONTROLLER_INBOX` and :data:`STEP_INBOX` for the others, which no pool
name can equal (a pool name has no ``_``).

What the subjects cannot separate, and these permissions therefore allow every pool: a result's subject is
its job key, which names no pool, so a pool's worker can read and publish any job's result, claim or settled
outcome, and any run's step events (all keyed by run ids, which are random); and it can publish into another
client's inbox if it knows its name. docs/security.md ("What pools do not separate") lists this.
tests/integration/bus/test_pool_permissions.py and test_nats_authorization.py run the clients under exactly
these users on a real nats-server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from forge.domain.events import EVENTS_CONSUMER, EVENTS_STREAM, EVENTS_SUBJECTS
from forge.domain.messages import (
    CANCEL_SUBJECTS,
    CANCELS_STREAM,
    DEFAULT_POOL,
    STREAM_OF,
    STREAMS,
    JobType,
    check_pool,
    job_subject,
)
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_config
from forge.jobs.dispatch import RESULTS_STREAM
from forge.settings import WorkerSettings

__all__ = [
    "API_USER",
    "CONTROLLER_INBOX",
    "CONTROLLER_USER",
    "STEP_INBOX",
    "STEP_JOB_TYPES",
    "STEP_USER",
    "Permissions",
    "api_permissions",
    "controller_permissions",
    "inbox_prefix",
    "password_reference",
    "password_variable",
    "pool_permissions",
    "pool_user",
    "pool_user_name",
    "step_permissions",
    "users",
]

Permissions = dict[str, dict[str, list[str]]]
"""A user's ``permissions`` block: ``{"publish": {"allow" | "deny": [...]}, "subscribe": {...}}``."""

CONTROLLER_USER = "forge-controller"
API_USER = "forge-api"
STEP_USER = "forge-step"
#: The controller's inbox prefix (its connection's and its ``Dispatcher``'s).
CONTROLLER_INBOX = "_INBOX._controller"
#: ``forge-step``'s inbox prefix.
STEP_INBOX = "_INBOX._step"
#: The jobs a run's steps dispatch (forge.workflows.templates.build: CI, artifact and release steps);
#: discovery is the controller's, and deploy jobs are not dispatched by steps.
STEP_JOB_TYPES: tuple[JobType, ...] = (JobType.CI, JobType.ARTIFACT, JobType.RELEASE)
_RESULTS_SUBJECTS = "pipeline.results.>"


def inbox_prefix(pool: str) -> str:
    """``_INBOX.<pool>``: the inbox prefix of a worker process of ``pool`` (its replies arrive only there)."""
    return f"_INBOX.{check_pool(pool)}"


def pool_user_name(pool: str) -> str:
    """``forge-worker-<pool>``: the NATS user of ``pool``'s workers."""
    return f"forge-worker-{check_pool(pool)}"


def _any_pool_jobs(job_type: JobType) -> str:
    """``<type prefix>.*.>``: the jobs of one type on every pool."""
    return f"{job_subject(job_type)}.*.>"


def pool_permissions(pool: str) -> Permissions:
    """What a worker of ``pool`` (``forge-worker``) does, and nothing else:

    * at start it reads the streams' configuration (``ensure_streams``: ``$JS.API.STREAM.INFO``; it changes a
      stream only when it differs, which its user may not) and creates or updates its own consumers
      (``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>``, the filter part of the subject pinned to its
      pool, so it cannot re-point its consumer at another pool's jobs);
    * it pulls from its own consumers only (``CONSUMER.INFO`` and ``CONSUMER.MSG.NEXT``) and acks on them
      (``$JS.ACK.<stream>.<consumer>.>``: ack, ``+WPI``, nak, term);
    * it looks up stored results, claims, settled outcomes and cancels (``STREAM.MSG.GET`` on
      ``pipeline-results`` and ``pipeline-cancels``), and publishes results, claims and settled outcomes
      (``pipeline.results.>``), step events (``pipeline.events.>``) and its types' DLQ entries;
    * it answers the dispatcher's ``Forge-Reply-To`` inbox (publish ``_INBOX.>``) and receives replies,
      pulled jobs and JetStream API answers on inboxes of its own (``_INBOX.<pool>.>``, :func:`inbox_prefix`),
      never on another client's, and it listens to ``pipeline.cancel.>``.
    """
    consumers = [consumer_config(t, pool, WorkerSettings(pool=pool)) for t in POOL_JOB_TYPES]
    publish = [f"$JS.API.STREAM.INFO.{s.name}" for s in STREAMS]
    for c in consumers:
        publish += [
            f"$JS.API.CONSUMER.CREATE.{c.stream}.{c.name}.{c.filter_subject}",
            f"$JS.API.CONSUMER.INFO.{c.stream}.{c.name}",
            f"$JS.API.CONSUMER.MSG.NEXT.{c.stream}.{c.name}",
            f"$JS.ACK.{c.stream}.{c.name}.>",
        ]
    publish += [f"$JS.API.STREAM.MSG.GET.{s}" for s in (RESULTS_STREAM, CANCELS_STREAM)]
    publish += [_RESULTS_SUBJECTS, EVENTS_SUBJECTS]
    publish += [f"pipeline.dlq.{t.value}" for t in POOL_JOB_TYPES]
    publish.append("_INBOX.>")
    subscribe = [f"{inbox_prefix(pool)}.>", CANCEL_SUBJECTS]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def controller_permissions() -> Permissions:
    """What ``forge-controller`` does (connected with :data:`CONTROLLER_INBOX`, its ``Dispatcher`` too):

    * at start it creates the streams or brings them to their configuration (``STREAM.INFO``, ``CREATE``,
      ``UPDATE`` of every stream: it owns them);
    * ``PoolConsumers`` lists the job streams' consumers (``CONSUMER.LIST``, also for the lag metrics) and
      creates any pool's missing ones (``CONSUMER.CREATE.<stream>.*.<type prefix>.*.>``: any consumer name,
      a filter on one pool's jobs of the stream's type); the metrics sampler reads stream sizes
      (``STREAM.INFO``);
    * ``StepEventRecorder`` creates, pulls from and acks on the one events consumer;
    * the discovery reconciler dispatches discovery jobs on every pool (``pipeline.discovery.*.>``), looks up
      their stored results (``STREAM.MSG.GET.pipeline-results``) and receives their replies on its inbox, or
      on the result subject of a job queued before (subscribe ``pipeline.results.>``);
    * a cancelled run's cancel goes out on ``pipeline.cancel.<run id>``.

    With the local engine the controller dispatches every step's job too; that engine runs in the embedded
    platform only (``forge dev up``), whose NATS has no authorization.
    """
    publish = []
    for s in STREAMS:
        publish += [f"$JS.API.STREAM.{action}.{s.name}" for action in ("INFO", "CREATE", "UPDATE")]
    for stream in dict.fromkeys(STREAM_OF[t] for t in POOL_JOB_TYPES):
        publish.append(f"$JS.API.CONSUMER.LIST.{stream}")
    publish += [f"$JS.API.CONSUMER.CREATE.{STREAM_OF[t]}.*.{_any_pool_jobs(t)}" for t in POOL_JOB_TYPES]
    publish += [
        f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.{EVENTS_CONSUMER}.{EVENTS_SUBJECTS}",
        f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.{EVENTS_CONSUMER}",
        f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{EVENTS_CONSUMER}",
        f"$JS.ACK.{EVENTS_STREAM}.{EVENTS_CONSUMER}.>",
        f"$JS.API.STREAM.MSG.GET.{RESULTS_STREAM}",
        _any_pool_jobs(JobType.DISCOVERY),
        CANCEL_SUBJECTS.replace(">", "*"),
    ]
    subscribe = [f"{CONTROLLER_INBOX}.>", _RESULTS_SUBJECTS]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def step_permissions() -> Permissions:
    """What ``forge-step dispatch`` does (connected with :data:`STEP_INBOX`): it subscribes to its job's
    result subject (``pipeline.results.<job key>``; the key names no pool, so ``pipeline.results.>``), looks
    for a stored result (``STREAM.MSG.GET.pipeline-results``), then publishes the job on its repository's
    pool (:data:`STEP_JOB_TYPES`, any pool: one step user serves every pool's runs) and receives the publish
    acknowledgement on its inbox."""
    publish = [f"$JS.API.STREAM.MSG.GET.{RESULTS_STREAM}"] + [_any_pool_jobs(t) for t in STEP_JOB_TYPES]
    subscribe = [f"{STEP_INBOX}.>", _RESULTS_SUBJECTS]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def api_permissions() -> Permissions:
    """The API connects to NATS for its health check only (a PING, which needs no permission): it may
    neither publish nor subscribe. (An empty allow list would allow everything; ``deny: [">"]`` does not.)"""
    return {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}


def pool_user(pool: str, password: str) -> dict[str, Any]:
    """``pool``'s entry of ``authorization.users``: user :func:`pool_user_name`, its password (a literal, or
    the chart's ``<< $VAR >>`` reference to an environment variable) and :func:`pool_permissions`."""
    return {"user": pool_user_name(pool), "password": password, "permissions": pool_permissions(pool)}


def password_variable(user: str) -> str:
    """The NATS server's environment variable holding ``user``'s password: ``FORGE_WORKER_ORG_B_PASSWORD``
    for ``forge-worker-org-b`` (a pool name has no ``_``, so two users never share one)."""
    return f"{user.upper().replace('-', '_')}_PASSWORD"


def password_reference(user: str) -> str:
    """``<< $<password_variable> >>``: the NATS chart writes it unquoted, and nats-server reads the variable."""
    return f"<< ${password_variable(user)} >>"


def users(pools: Iterable[str], password: Callable[[str], str] = password_reference) -> list[dict[str, Any]]:
    """``authorization.users``: the controller, the API, the step dispatcher, then a worker user for each of
    ``pools`` and ``default`` (sorted); ``password(user)`` is each user's password (by default a reference
    to :func:`password_variable`)."""
    fixed = (
        (CONTROLLER_USER, controller_permissions()),
        (API_USER, api_permissions()),
        (STEP_USER, step_permissions()),
    )
    entries = [{"user": u, "password": password(u), "permissions": p} for u, p in fixed]
    entries += [pool_user(pool, password(pool_user_name(pool))) for pool in sorted({DEFAULT_POOL, *pools})]
    return entries

"""What a worker of one pool may do on NATS: the subject permissions of a per-pool NATS user.

Derived from what ``forge-worker`` does, so that a worker of pool ``p`` connected as ``p``'s user runs and
cannot touch another pool's jobs (tests/integration/bus/test_pool_permissions.py runs a worker under exactly
these permissions on a real nats-server and is refused the other pool's subjects and consumers):

* at start it reads the streams' configuration (``ensure_streams``: ``$JS.API.STREAM.INFO``; it changes a
  stream only when it differs, which its user may not) and creates or updates its own consumers
  (``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>``, the filter part of the subject pinned to its
  pool, so it cannot re-point its consumer at another pool's jobs);
* it pulls from its own consumers only (``CONSUMER.INFO`` and ``CONSUMER.MSG.NEXT``) and acks on them
  (``$JS.ACK.<stream>.<consumer>.>``: ack, ``+WPI``, nak, term);
* it looks up stored results, claims, settled outcomes and cancels (``STREAM.MSG.GET`` on
  ``pipeline-results`` and ``pipeline-cancels``), and publishes results, claims and settled outcomes
  (``pipeline.results.>``), step events (``pipeline.events.>``) and its type's DLQ entries;
* it answers the dispatcher's ``Forge-Reply-To`` inbox (publish ``_INBOX.>``) and receives replies, pulled
  jobs and JetStream API answers on inboxes of its own (``_INBOX.<pool>.>``, the connection's inbox prefix,
  :func:`inbox_prefix`), never on another client's, and it listens to ``pipeline.cancel.>``.

What the subjects cannot separate, and these permissions therefore allow every pool: a result's subject is
its job key, which names no pool, so a pool's worker can read and publish any job's result, claim or settled
outcome, and any run's step events (all keyed by run ids, which are random); and it can publish into another
client's inbox if it knows its name. docs/deploy.md ("Worker pools") lists this.
"""

from __future__ import annotations

from typing import Any

from forge.domain.messages import CANCEL_SUBJECTS, CANCELS_STREAM, STREAMS, check_pool
from forge.jobs.consumers import POOL_JOB_TYPES, consumer_config
from forge.jobs.dispatch import RESULTS_STREAM
from forge.settings import WorkerSettings

__all__ = ["inbox_prefix", "pool_permissions", "pool_user"]


def inbox_prefix(pool: str) -> str:
    """``_INBOX.<pool>``: the inbox prefix of a worker process of ``pool`` (its replies arrive only there)."""
    return f"_INBOX.{check_pool(pool)}"


def pool_permissions(pool: str) -> dict[str, dict[str, list[str]]]:
    """The ``permissions`` block of ``pool``'s NATS user (nats-server configuration, publish and subscribe
    allow lists; anything not listed is refused)."""
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
    publish += ["pipeline.results.>", "pipeline.events.>"]
    publish += [f"pipeline.dlq.{t.value}" for t in POOL_JOB_TYPES]
    publish.append("_INBOX.>")
    subscribe = [f"{inbox_prefix(pool)}.>", CANCEL_SUBJECTS]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def pool_user(pool: str, password: str) -> dict[str, Any]:
    """``pool``'s entry of ``authorization.users``: user ``forge-worker-<pool>``, its password (a literal, or
    the chart's ``<< $VAR >>`` reference to an environment variable) and :func:`pool_permissions`."""
    return {"user": f"forge-worker-{check_pool(pool)}", "password": password, "permissions": pool_permissions(pool)}

"""The controller's series: reconcile durations and errors per reconciler, step events applied,
releases recorded, deployments by outcome, GitOps push retries (counted where each happens)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "DEPLOYMENTS",
    "GITOPS_PUSH_RETRIES",
    "RECONCILE_DURATION",
    "RECONCILE_ERRORS",
    "RELEASES_RECORDED",
    "STEP_EVENTS_APPLIED",
]

RECONCILE_DURATION = Histogram(
    "forge_controller_reconcile_duration_seconds",
    "Seconds one reconcile of one run took (a workflow followed to its end is one), by reconciler",
    ["reconciler"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
)
RECONCILE_ERRORS = Counter(
    "forge_controller_reconcile_errors",
    "Reconcile errors by reconciler and kind: transient (retried), permanent (the run failed), internal (a bug)",
    ["reconciler", "kind"],
)
STEP_EVENTS_APPLIED = Counter(
    "forge_controller_step_events_applied", "Step events written to PostgreSQL, by kind", ["kind"]
)
RELEASES_RECORDED = Counter("forge_releases_recorded", "Releases recorded (new Release rows)")
DEPLOYMENTS = Counter(
    "forge_deployments", "Deployments by environment and outcome (committed, failed)", ["environment", "outcome"]
)
GITOPS_PUSH_RETRIES = Counter(
    "forge_gitops_push_retries",
    "Pointer commits re-planned on a new head after a non-fast-forward push, by environment",
    ["environment"],
)

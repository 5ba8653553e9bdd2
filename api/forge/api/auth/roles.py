"""The one role table of the API: which roles may call each (method, path template).

Roles are realm roles of the issuer (Keycloak's ``realm_access.roles``, DESIGN §7):

=================  ===================================================================
role               may
=================  ===================================================================
developer          read everything; create and cancel runs; request releases
approver           read everything; approve and revoke approvals
operator           read everything; runs and releases as a developer; register and
                   change repositories; deploy
service-account    read everything; runs, releases and deployments (automation, the
                   controller's automatic dev deployments)
github-actions     create runs of its own ``repository`` claim, nothing else (a GitHub
                   Actions workflow token, when ``FORGE_AUTH__GITHUB_ACTIONS`` is on;
                   the repository is checked by the guard)
=================  ===================================================================

Open by intent (no token): ``POST /v1/webhooks/github`` (its HMAC signature is the
authentication), ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus scrapes it in the cluster; the
Gateway does not route it), the OpenAPI documents under ``/schema`` and every ``OPTIONS`` (it names
the allowed methods, nothing else). Everything else needs a token; a route that is neither open
nor in :data:`ROUTE_ROLES` is refused to every token (deny by default), and a test walks the app's
OpenAPI so no route is added without an entry here.

Entries for routes that other issues add (approvals, deployments, repository updates) are here
already, so the route is guarded the day it lands.
"""

from __future__ import annotations

from collections.abc import Mapping

from forge.adapters.oidc import GITHUB_ACTIONS_ROLE

__all__ = [
    "APPROVER",
    "DEVELOPER",
    "GITHUB_ACTIONS",
    "OPEN",
    "OPEN_PREFIXES",
    "OPERATOR",
    "READERS",
    "ROLES",
    "ROUTE_ROLES",
    "SERVICE_ACCOUNT",
    "is_open",
    "roles_for",
]

DEVELOPER = "developer"
APPROVER = "approver"
OPERATOR = "operator"
SERVICE_ACCOUNT = "service-account"
GITHUB_ACTIONS = GITHUB_ACTIONS_ROLE
ROLES = frozenset({DEVELOPER, APPROVER, OPERATOR, SERVICE_ACCOUNT, GITHUB_ACTIONS})

READERS = frozenset({DEVELOPER, APPROVER, OPERATOR, SERVICE_ACCOUNT})
RUNNERS = frozenset({DEVELOPER, OPERATOR, SERVICE_ACCOUNT})
OPERATORS = frozenset({OPERATOR})
APPROVERS = frozenset({APPROVER})
DEPLOYERS = frozenset({OPERATOR, SERVICE_ACCOUNT})

OPEN = frozenset({("POST", "/v1/webhooks/github"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")})
OPEN_PREFIXES = ("/schema",)

ROUTE_ROLES: Mapping[tuple[str, str], frozenset[str]] = {
    # repositories
    ("GET", "/v1/repositories"): READERS,
    ("GET", "/v1/repositories/{owner}/{name}"): READERS,
    ("POST", "/v1/repositories"): OPERATORS,
    ("PATCH", "/v1/repositories/{owner}/{name}"): OPERATORS,
    ("PUT", "/v1/repositories/{owner}/{name}"): OPERATORS,
    ("DELETE", "/v1/repositories/{owner}/{name}"): OPERATORS,
    # runs
    ("GET", "/v1/runs"): READERS,
    ("POST", "/v1/runs"): RUNNERS | {GITHUB_ACTIONS},
    ("GET", "/v1/runs/{run_id}"): READERS,
    ("DELETE", "/v1/runs/{run_id}"): RUNNERS,
    ("GET", "/v1/runs/{run_id}/executions"): READERS,
    ("GET", "/v1/runs/{run_id}/events"): READERS,
    ("GET", "/v1/runs/{run_id}/steps/{step_id}/logs"): READERS,
    # releases
    ("GET", "/v1/releases"): READERS,
    ("POST", "/v1/releases"): RUNNERS,
    ("GET", "/v1/releases/{owner}/{repo}/{project}/{ref}"): READERS,
    # approvals
    ("POST", "/v1/approvals"): APPROVERS,
    ("POST", "/v1/approvals/{approval_id}/revoke"): APPROVERS,
    ("GET", "/v1/approvals/{release_id}/{environment}"): READERS,
    # deployments
    ("POST", "/v1/deployments"): DEPLOYERS,
    ("GET", "/v1/deployments/{deployment_id}"): READERS,
    ("GET", "/v1/deployments/{environment}/{owner}/{repo}/{project}"): READERS,
    ("GET", "/v1/deployments/{environment}/{owner}/{repo}/{project}/history"): READERS,
}


def is_open(method: str, path_template: str) -> bool:
    """Whether the route needs no token."""
    return (
        method == "OPTIONS"
        or (method, path_template) in OPEN
        or any(path_template == p or path_template.startswith(f"{p}/") for p in OPEN_PREFIXES)
    )


def roles_for(method: str, path_template: str) -> frozenset[str]:
    """The roles allowed on a protected route; none (deny) when the route is not in the table."""
    return ROUTE_ROLES.get((method, path_template), frozenset())

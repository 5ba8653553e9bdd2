"""The one place requests are authenticated and authorized: the app's ``before_request`` hook.

Every request is routed first, then guarded by its (method, path template) in the role table
(:mod:`forge.api.auth.roles`): open routes pass; every other one needs ``Authorization: Bearer
<token>`` that the identity provider verifies (else :class:`AuthenticationError` → 401 with
``WWW-Authenticate: Bearer``), whose roles meet the table (else :class:`AuthorizationError` → 403;
a route missing from the table is refused to everyone). The verified :class:`Identity` is the
request's ``user`` (``request.user``), so handlers record who acted (runs' ``triggered_by``).

Without an identity provider (``ApiServices.identity is None``) every protected route answers 401:
``forge-api`` never starts that way, and an app built in-process without one fails closed.

Why a ``before_request`` hook and not a Litestar guard: Litestar calls a guard with a ``copy()`` of
the route handler on every request (``BaseRouteHandler.authorize_connection``), ~9 % of an
executions read's CPU (docs/performance.md). The hook runs at the same point (after routing, before
the handler's parameters are parsed) and its exceptions take the same way to the same problem
responses. Litestar keeps only the innermost layer's ``before_request``, so :func:`require_guard`
refuses an app where any route would answer without this hook (a controller or handler with its own
hook, or a route of another kind).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.exceptions import ImproperlyConfiguredException
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from forge.api.auth.limits import RateLimits, body_repository
from forge.api.auth.roles import GITHUB_ACTIONS, is_open, roles_for
from forge.api.errors import problem_spec
from forge.errors import AuthenticationError, AuthorizationError
from forge.ports.others import Identity, IdentityProvider

__all__ = [
    "MAX_TOKEN_BYTES",
    "MISSING_TOKEN",
    "SECURITY_SCHEME",
    "document_auth",
    "guard",
    "require_guard",
    "security_components",
]

MAX_TOKEN_BYTES = 8192
MISSING_TOKEN = "missing_token"  # noqa: S105 - a problem code, not a secret
"""The code (problem title) of a request without a bearer token; RFC 6750 sends no error then."""
SECURITY_SCHEME = "bearerAuth"

Guard = Callable[[Request[Any, Any, Any]], Awaitable[None]]


def _authorization(scope: Any) -> str | None:
    """The first ``Authorization`` header of the request, as ``connection.headers.get`` gives it (without
    building the request's header multidict)."""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = _authorization(connection.scope)
    if not header:
        raise AuthenticationError("missing bearer token", code=MISSING_TOKEN)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization is not a Bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    return token.strip()


async def _own_repository_only(connection: ASGIConnection[Any, Any, Any, Any], who: Identity) -> None:
    """A GitHub Actions token creates runs of the repository it was issued to (its ``repository`` claim) only."""
    own = who.claims.get("repository")
    wanted = await body_repository(connection)
    if not isinstance(own, str) or wanted is None or wanted.casefold() != own.casefold():
        raise AuthorizationError(
            f"a GitHub Actions token of {str(own)[:200]!r} may create runs of that repository only, "
            f"not of {str(wanted)[:200]!r}"
        )


def guard(identity: IdentityProvider | None, limits: RateLimits | None = None) -> Guard:
    """The app's ``before_request`` hook enforcing the role table with ``identity``, then the rate ``limits`` (429)."""

    async def authorize(connection: Request[Any, Any, Any]) -> None:
        method, template = connection.scope["method"], connection.scope["path_template"]
        if is_open(method, template):
            return
        token = _bearer(connection)
        if identity is None:
            raise AuthenticationError("no identity provider is configured")
        who: Identity = await identity.verify(token)
        connection.scope["user"] = who
        allowed = roles_for(method, template)
        if not allowed:
            raise AuthorizationError(f"{method} {template} is not open to any role")
        if not who.roles & allowed:
            held = ", ".join(sorted(who.roles)) or "none"
            raise AuthorizationError(
                f"{method} {template} needs one of the roles {', '.join(sorted(allowed))}; the token has {held}"
            )
        if GITHUB_ACTIONS in who.roles:
            await _own_repository_only(connection, who)
        if limits is not None:
            await limits.check(connection, who)

    return authorize


def require_guard(app: Litestar) -> None:
    """Refuse ``app`` unless every route it serves runs its ``before_request`` hook (the guard) first.

    Litestar resolves ``before_request`` to the innermost layer's hook only, so a controller or handler
    declaring its own would silently replace the guard; a route that is not an HTTP route runs no hook.
    """
    hook = app.before_request
    if hook is None:
        raise ImproperlyConfiguredException("the app has no before_request hook: no route would be guarded")
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            raise ImproperlyConfiguredException(f"{route.path} is not an HTTP route: it would not be guarded")
        for handler in route.route_handlers:
            if handler.resolve_before_request() is not hook:
                raise ImproperlyConfiguredException(
                    f"{sorted(handler.http_methods)} {route.path} has a before_request hook of its own: "
                    "it would not be guarded"
                )


def security_components() -> Components:
    return Components(
        security_schemes={
            SECURITY_SCHEME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="An OIDC access token of the platform's issuer (Keycloak; the local issuer when "
                "embedded); roles from realm_access.roles",
            )
        }
    )


def document_auth(app: Litestar) -> None:
    """Give every protected operation the bearer security requirement and its 401 and 403 responses."""
    unauthenticated = problem_spec("No bearer token, or one that does not verify (WWW-Authenticate names why)")
    forbidden = problem_spec("The token's roles do not allow this operation")
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            methods = handler.http_methods - {"OPTIONS"}
            if not methods or all(is_open(method, route.path_format) for method in methods):
                continue
            handler.responses = {**(handler.responses or {}), 401: unauthenticated, 403: forbidden}
            handler.security = [{SECURITY_SCHEME: []}]

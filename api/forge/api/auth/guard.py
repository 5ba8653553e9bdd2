"""The one place requests are authenticated and authorized: an app-level Litestar guard.

Every request is routed first, then guarded by its (method, path template) in the role table
(:mod:`forge.api.auth.roles`): open routes pass; every other one needs ``Authorization: Bearer
<token>`` that the identity provider verifies (else :class:`AuthenticationError` → 401 with
``WWW-Authenticate: Bearer``), whose roles meet the table (else :class:`AuthorizationError` → 403;
a route missing from the table is refused to everyone). The verified :class:`Identity` is the
request's ``user`` (``request.user``), so handlers record who acted (runs' ``triggered_by``).

Without an identity provider (``ApiServices.identity is None``) every protected route answers 401:
``forge-api`` never starts that way, and an app built in-process without one fails closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from forge.api.auth.limits import RateLimits, body_repository
from forge.api.auth.roles import GITHUB_ACTIONS, is_open, roles_for
from forge.api.errors import problem_spec
from forge.errors import AuthenticationError, AuthorizationError
from forge.ports.others import Identity, IdentityProvider

__all__ = ["MAX_TOKEN_BYTES", "MISSING_TOKEN", "SECURITY_SCHEME", "document_auth", "guard", "security_components"]

MAX_TOKEN_BYTES = 8192
MISSING_TOKEN = "missing_token"  # noqa: S105 - a problem code, not a secret
"""The code (problem title) of a request without a bearer token; RFC 6750 sends no error then."""
SECURITY_SCHEME = "bearerAuth"

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization")
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
    """The app-level guard enforcing the role table with ``identity``, then the rate ``limits`` (429)."""

    async def authorize(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        method, template = connection.scope["method"], connection.scope["path_template"]  # type: ignore[typeddict-item]
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

"""Authentication and authorization of API requests: the role table and the guard that enforces it."""

from forge.api.auth.guard import document_auth, guard, security_components
from forge.api.auth.roles import ROUTE_ROLES, is_open, roles_for

__all__ = ["ROUTE_ROLES", "document_auth", "guard", "is_open", "roles_for", "security_components"]

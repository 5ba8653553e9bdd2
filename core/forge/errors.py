"""The one error tree of Catalyst Forge.

Workers, the controller and the API branch on the class, never on the message::

    ForgeError(message, code, details)
    ├── TransientError(retry_after)      retry later: timeouts, unavailable services, 5xx, 429
    │   └── ServiceUnavailableError     a dependency (NATS, PostgreSQL, S3, git remote) is down
    └── PermanentError                   fail now: retrying gives the same answer
        ├── ConfigError(issues)         a .forge/*.yaml file is invalid; issues name file:line: field: reason
        ├── InvalidInputError           a request, message or token is malformed
        ├── NotFoundError               the thing asked for does not exist
        ├── ConflictError               an illegal state transition or a clashing natural key
        ├── LimitExceededError          an input crosses a size, count or depth cap
        ├── AuthenticationError         no bearer token, or one that does not verify (401)
        └── AuthorizationError          a verified identity whose roles do not allow the action (403)

The API maps the tree to HTTP status codes in one place (``forge.api.errors``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "ConfigError",
    "ConfigIssue",
    "ConflictError",
    "ForgeError",
    "InvalidInputError",
    "LimitExceededError",
    "NotFoundError",
    "PermanentError",
    "ServiceUnavailableError",
    "TransientError",
]


class ForgeError(Exception):
    """Base of every error Catalyst Forge raises on purpose."""

    code = "forge_error"

    def __init__(self, message: str, *, code: str | None = None, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class TransientError(ForgeError):
    """Retrying later may succeed."""

    code = "transient"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class ServiceUnavailableError(TransientError):
    code = "service_unavailable"


class PermanentError(ForgeError):
    """Retrying gives the same answer."""

    code = "permanent"


class InvalidInputError(PermanentError):
    code = "invalid_input"


class NotFoundError(PermanentError):
    code = "not_found"


class ConflictError(PermanentError):
    code = "conflict"


class LimitExceededError(PermanentError):
    code = "limit_exceeded"


class AuthenticationError(PermanentError):
    """The caller is not known: no bearer token, or one that does not verify ("token expired")."""

    code = "unauthenticated"


class AuthorizationError(PermanentError):
    """The caller is known, but none of its roles allows the action."""

    code = "forbidden"


class ConfigIssue:
    """One problem in one configuration file, printed as ``file:line: field: reason``."""

    __slots__ = ("field", "file", "line", "reason")

    def __init__(self, file: str, line: int | None, field: str, reason: str):
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"

    def __repr__(self) -> str:
        return f"ConfigIssue({self!s})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigIssue) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


class ConfigError(PermanentError):
    """One or more configuration files are invalid; every issue is listed."""

    code = "invalid_config"

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        lines = "\n".join(str(i) for i in self.issues)
        super().__init__(
            f"invalid configuration ({len(self.issues)} error(s)):\n{lines}",
            details={"errors": [i.to_dict() for i in self.issues]},
        )

"""SourceHost on GitHub's REST API: commit statuses (``POST /repos/{owner}/{repo}/statuses/{sha}``).

Errors are translated at the boundary by ``forge.adapters._http`` (shared with the Argo adapter):
401/403 → ``PermanentError`` (the token cannot write statuses), 404 → ``NotFoundError`` (no such
repository or commit for this token), 422 → ``InvalidInputError`` (GitHub's validation message),
5xx, 429 and rate limits (403 with ``Retry-After`` or ``x-ratelimit-remaining: 0``) →
``TransientError`` with ``retry_after``, transport errors → ``ServiceUnavailableError``.

A status is best effort and must not hold up the controller: one retry (stamina) after
``retry_delay`` seconds, or after ``Retry-After`` when GitHub asks for at most 10 s; a longer
rate limit is raised at once. Posting the same status twice is harmless (the latest per context
wins), so every failure that is transient is retried. Each attempt goes through the ``github``
circuit breaker (``forge.adapters._breakers``): while GitHub is down, statuses fail fast.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import httpx

from forge.adapters._breakers import CircuitBreaker
from forge.adapters._http import RetryPolicy, retry, send
from forge.errors import InvalidInputError

if TYPE_CHECKING:
    from forge.settings import GithubSettings

__all__ = ["GithubStatuses", "StatusState"]

StatusState = Literal["pending", "success", "failure", "error"]
_DESCRIPTION_LIMIT = 140  # GitHub rejects longer descriptions
_SERVICE = "GitHub"
_HINTS = {
    401: "check the token",
    403: "check the token's statuses permission",
    404: "unknown repository or commit, or the token cannot see it",
}


class GithubStatuses:
    def __init__(self, client: httpx.AsyncClient, *, retry_delay: float = 1.0, breaker: CircuitBreaker | None = None):
        self._client = client
        self._retry_delay = retry_delay
        self._breaker = breaker or CircuitBreaker("github")

    @classmethod
    def from_token(
        cls, api_url: str, token: str, *, timeout: float = 10.0, breaker: CircuitBreaker | None = None
    ) -> Self:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "catalyst-forge",
        }
        client = httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)
        return cls(client, breaker=breaker)

    @classmethod
    def from_settings(cls, settings: GithubSettings) -> Self:
        """From ``FORGE_GITHUB__*`` (the token must be set), with the ``github`` breaker's thresholds."""
        if settings.token is None:
            raise InvalidInputError("FORGE_GITHUB__TOKEN is not set: commit statuses cannot be posted")
        breaker = CircuitBreaker.from_settings("github", settings.breaker)
        return cls.from_token(settings.api_url, settings.token.get_secret_value(), breaker=breaker)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._client.aclose()

    async def set_commit_status(
        self, repository: str, sha: str, *, state: str, context: str, description: str, target_url: str | None
    ) -> None:
        if state not in {"pending", "success", "failure", "error"}:
            raise InvalidInputError(f"commit status state {state!r} is not one of pending, success, failure, error")
        body: dict[str, str] = {"state": state, "context": context, "description": description[:_DESCRIPTION_LIMIT]}
        if target_url:
            body["target_url"] = target_url
        url = f"/repos/{repository}/statuses/{sha}"

        async def post() -> httpx.Response:
            async with self._breaker:
                return await send(self._client, "POST", url, service=_SERVICE, json=body, hints=_HINTS)

        await retry(post, self._policy())

    def _policy(self) -> RetryPolicy:
        delay = self._retry_delay
        return RetryPolicy(
            attempts=2, timeout=None, wait_initial=delay, wait_max=delay, wait_jitter=0.0, longest_retry_after=10.0
        )

"""SourceHost on GitHub's REST API: commit statuses (``POST /repos/{owner}/{repo}/statuses/{sha}``).

Errors are translated at the boundary: 401/403 → ``PermanentError`` (the token cannot write
statuses), 404 → ``NotFoundError`` (no such repository or commit for this token), 422 →
``InvalidInputError`` (GitHub's validation message), 5xx/429 and transport errors →
``TransientError`` / ``ServiceUnavailableError``. One retry for transient failures.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Literal, Self

import httpx

from forge.errors import (
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)

__all__ = ["GithubStatuses", "StatusState"]

StatusState = Literal["pending", "success", "failure", "error"]
_DESCRIPTION_LIMIT = 140  # GitHub rejects longer descriptions


class GithubStatuses:
    def __init__(self, client: httpx.AsyncClient, *, retry_delay: float = 1.0):
        self._client = client
        self._retry_delay = retry_delay

    @classmethod
    def from_token(cls, api_url: str, token: str, *, timeout: float = 10.0) -> Self:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "catalyst-forge",
        }
        return cls(httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout))

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
        for attempt in (1, 2):
            try:
                await self._post(url, body)
            except TransientError:
                if attempt == 2:
                    raise
                await asyncio.sleep(self._retry_delay)
            else:
                return

    async def _post(self, url: str, body: dict[str, str]) -> None:
        try:
            response = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"GitHub at {self._client.base_url} did not answer: {exc}") from None
        if response.status_code < 300:
            return
        raise _error(response)


def _error(response: httpx.Response) -> ForgeError:
    try:
        message = str(response.json().get("message", response.text))
    except ValueError:
        message = response.text[:200]
    where = f"GitHub {response.request.method} {response.request.url.path}"
    code = response.status_code
    if code in {401, 403} and response.headers.get("x-ratelimit-remaining") != "0":
        return PermanentError(f"{where}: {code} {message} (check the token's statuses permission)")
    if code == 404:
        return NotFoundError(f"{where}: {message} (unknown repository or commit, or the token cannot see it)")
    if code == 422:
        return InvalidInputError(f"{where}: {message}")
    return TransientError(f"{where}: {code} {message}", retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "5"))
    except ValueError:  # an HTTP date: wait the default
        return 5.0

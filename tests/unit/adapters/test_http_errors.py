"""forge.adapters._http: httpx outcomes → the error tree, and the stamina retry around them.

Requests go through ``httpx.MockTransport``; stamina runs in test mode (attempts kept, waits zero)
except in the test that measures a ``Retry-After`` wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import stamina

from forge.adapters._http import RetryPolicy, http_error, retry, retry_after, send, unprocessed
from forge.errors import (
    ConflictError,
    ForgeError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://argo.test", transport=httpx.MockTransport(handler))


def answering(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering ``responses`` in order (the last one forever), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return handle, seen


async def failure(status: int, headers: dict[str, str] | None = None, **body: Any) -> ForgeError:
    handler, _ = answering(httpx.Response(status, headers=headers, json=body or None))
    async with client(handler) as c:
        with pytest.raises(ForgeError) as info:
            await send(c, "GET", "/api/v1/workflows/ci/wf", service="Argo Server", hints={403: "check RBAC"})
    return info.value


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, InvalidInputError, "invalid_input"),
        (401, PermanentError, "unauthorized"),
        (403, PermanentError, "forbidden"),
        (404, NotFoundError, "not_found"),
        (409, ConflictError, "conflict"),
        (410, PermanentError, "permanent"),
        (422, InvalidInputError, "invalid_input"),
        (429, TransientError, "rate_limited"),
        (500, TransientError, "transient"),
        (501, TransientError, "transient"),
        (502, ServiceUnavailableError, "service_unavailable"),
        (503, ServiceUnavailableError, "service_unavailable"),
        (504, ServiceUnavailableError, "service_unavailable"),
    ],
)
async def test_status_codes_map_onto_the_error_tree(status: int, kind: type[ForgeError], code: str) -> None:
    error = await failure(status, message="the server's words")
    assert type(error) is kind
    assert error.code == code
    assert "the server's words" in str(error)
    assert error.details == {"status": status, "request": "GET /api/v1/workflows/ci/wf"}


async def test_messages_name_the_service_the_request_and_what_to_check() -> None:
    forbidden = await failure(403, message="cannot list workflows")
    assert str(forbidden) == "Argo Server refused the request (403): cannot list workflows; check RBAC"
    unauthorized = await failure(401, message="token not valid")
    assert str(unauthorized).endswith("token not valid; check the credentials and their permissions")
    assert str(await failure(404, message="gone")) == "Argo Server: GET /api/v1/workflows/ci/wf: 404 gone"


async def test_the_message_falls_back_to_the_body_then_the_reason() -> None:
    handler, _ = answering(httpx.Response(502, text="<html>bad gateway</html>"), httpx.Response(503))
    async with client(handler) as c:
        with pytest.raises(ServiceUnavailableError, match="502 <html>bad gateway</html>"):
            await send(c, "GET", "/x", service="S")
        with pytest.raises(ServiceUnavailableError, match=r"503 Service Unavailable$"):
            await send(c, "GET", "/x", service="S")


@pytest.mark.parametrize(("status", "header", "wait"), [(503, "7", 7.0), (429, "2", 2.0), (500, None, None)])
async def test_retry_after_travels_with_transient_errors(status: int, header: str | None, wait: float | None) -> None:
    error = await failure(status, {"Retry-After": header} if header else None)
    assert isinstance(error, TransientError)
    assert error.retry_after == wait


async def test_a_403_that_is_a_rate_limit_is_transient() -> None:
    secondary = await failure(403, {"Retry-After": "30"}, message="secondary rate limit")
    assert isinstance(secondary, TransientError)
    assert (secondary.code, secondary.retry_after) == ("rate_limited", 30.0)
    reset = str(int(time.time()) + 120)
    primary = await failure(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, message="rate limit")
    assert isinstance(primary, TransientError)
    assert primary.retry_after is not None
    assert 100 < primary.retry_after <= 120


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    at = now.timestamp()
    assert retry_after(httpx.Headers({"Retry-After": "120"}), now=at) == 120.0
    assert retry_after(httpx.Headers({"Retry-After": " 1.5 "}), now=at) == 1.5
    assert retry_after(httpx.Headers({"Retry-After": later}), now=at) == 90.0
    assert retry_after(httpx.Headers({"Retry-After": earlier}), now=at) == 0.0
    for nonsense in ("soon", "-3", "inf", "nan", ""):
        assert retry_after(httpx.Headers({"Retry-After": nonsense}), now=at) is None
    assert retry_after(httpx.Headers({}), now=at) is None
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(at) + 42)}
    assert retry_after(httpx.Headers(spent), now=at) == 42.0
    assert retry_after(httpx.Headers({**spent, "x-ratelimit-remaining": "12"}), now=at) is None


async def test_transport_errors_are_service_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client(refuse) as c:
        with pytest.raises(ServiceUnavailableError, match=r"^S at http://argo\.test is unreachable: ConnectError") as a:
            await send(c, "POST", "/submit", service="S")
    async with client(stall) as c:
        with pytest.raises(ServiceUnavailableError, match=r"^S at http://argo\.test did not answer: ReadTimeout") as b:
            await send(c, "POST", "/submit", service="S")
    assert a.value.details == {"request": "POST /submit", "transport": "ConnectError"}
    assert unprocessed(a.value)
    assert not unprocessed(b.value)  # the server may have acted on it
    assert not unprocessed(http_error(httpx.ReadError("reset"), service="S"))


async def test_transient_errors_are_retried_until_they_pass() -> None:
    handler, seen = answering(
        httpx.Response(503), httpx.Response(500), httpx.Response(429), httpx.Response(200, json={"ok": True})
    )
    async with client(handler) as c:
        response = await retry(lambda: send(c, "GET", "/x", service="S"), RetryPolicy(attempts=4))
    assert response.json() == {"ok": True}
    assert len(seen) == 4


async def test_permanent_errors_and_spent_attempts_end_the_retry() -> None:
    handler, seen = answering(httpx.Response(404, json={"message": "no such thing"}))
    async with client(handler) as c:
        with pytest.raises(NotFoundError, match="no such thing"):
            await retry(lambda: send(c, "GET", "/x", service="S"), RetryPolicy())
    assert len(seen) == 1
    handler, seen = answering(httpx.Response(503, json={"message": "down"}))
    async with client(handler) as c:
        with pytest.raises(ServiceUnavailableError, match="down"):
            await retry(lambda: send(c, "GET", "/x", service="S"), RetryPolicy(attempts=3))
    assert len(seen) == 3


async def test_non_idempotent_calls_are_repeated_only_when_not_processed() -> None:
    handler, seen = answering(httpx.Response(503), httpx.Response(429), httpx.Response(201))
    async with client(handler) as c:
        await retry(lambda: send(c, "POST", "/submit", service="S"), RetryPolicy(), idempotent=False)
    assert len(seen) == 3
    for status in (500, 502, 504):
        handler, seen = answering(httpx.Response(status), httpx.Response(201))
        async with client(handler) as c:
            with pytest.raises(TransientError):
                await retry(lambda: send(c, "POST", "/submit", service="S"), RetryPolicy(), idempotent=False)
        assert len(seen) == 1, status


async def test_a_retry_after_is_the_wait_unless_it_is_too_long() -> None:
    handler, seen = answering(httpx.Response(503, headers={"Retry-After": "0.3"}), httpx.Response(200))
    policy = RetryPolicy(wait_initial=0.0, wait_jitter=0.0)
    with stamina.set_testing(False):  # a real wait, measured
        async with client(handler) as c:
            started = time.monotonic()
            await retry(lambda: send(c, "GET", "/x", service="S"), policy)
            waited = time.monotonic() - started
    assert len(seen) == 2
    assert 0.3 <= waited < 2.0
    handler, seen = answering(httpx.Response(503, headers={"Retry-After": "11"}), httpx.Response(200))
    async with client(handler) as c:
        with pytest.raises(ServiceUnavailableError) as info:
            await retry(lambda: send(c, "GET", "/x", service="S"), RetryPolicy(longest_retry_after=10))
    assert info.value.retry_after == 11.0
    assert len(seen) == 1  # the caller decides when to come back

"""``HttpStatusReporter`` against the real API (over ASGI), and its retries against scripted transports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.httpx_reporter import HttpStatusReporter
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.services import ApiServices
from forge.domain.discovery import AffectedProject, DiscoveredProject, DiscoveredStep, DiscoveryResult, PhaseGroup
from forge.domain.status import Status
from forge.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    ServiceUnavailableError,
    TransientError,
)
from forge.ports import StatusReporter
from forge.ports.store import NewRepository, NewRun

SHA = "e" * 40


@pytest.fixture
async def reporter(store: PostgresStore, bus: NatsBus, objects: MinioObjectStore) -> AsyncIterator[HttpStatusReporter]:
    app = create_app(ApiServices(store=store, bus=bus, objects=objects, secrets=EnvSecretProvider(environ={})))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's precise ASGI types
    async with HttpStatusReporter(httpx.AsyncClient(transport=transport, base_url="http://forge.test")) as reporter:
        yield reporter


async def _step(store: PostgresStore) -> uuid.UUID:
    await store.register_repository(NewRepository("acme/mono", "/srv/git/mono"))
    run, _ = await store.create_run(NewRun(repository="acme/mono", commit_sha=SHA))
    await store.claim_discovery(limit=1)
    found = DiscoveryResult(
        commit=SHA,
        base=None,
        projects=[
            DiscoveredProject(
                name="api",
                path="api",
                config_blob="0" * 40,
                phases={"test": ["unit"]},
                steps=[DiscoveredStep(phase="test", name="unit", action="run", target="true", timeout_seconds=5)],
            )
        ],
        affected=[AffectedProject(project="api", reasons=["changed"])],
        phase_groups=[PhaseGroup(group=0, phases=["test"])],
    )
    await store.record_discovery(run.id, found.model_dump(mode="json"), "d/x")
    return (await store.create_executions(run.id, found)).step_id("test", "api", "unit")


async def test_reports_reach_the_store(reporter: HttpStatusReporter, store: PostgresStore) -> None:
    port: StatusReporter = reporter  # checked by mypy
    step_id = await _step(store)
    await port.step_status(step_id, Status.RUNNING, attempt=1, logs_key="logs/unit.log")
    await port.step_status(step_id, Status.SUCCESS, exit_code=0, message="fine")
    step = await store.get_step(step_id)
    assert (step.status, step.exit_code, step.attempts, step.logs_key) == (Status.SUCCESS, 0, 1, "logs/unit.log")


async def test_unknown_step_is_not_found(reporter: HttpStatusReporter) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError, match=str(missing)) as info:
        await reporter.step_status(missing, Status.RUNNING)
    assert info.value.details == {"status_code": 404}


async def test_illegal_transition_is_a_conflict(reporter: HttpStatusReporter, store: PostgresStore) -> None:
    step_id = await _step(store)
    with pytest.raises(ConflictError, match="cannot go from pending to success"):
        await reporter.step_status(step_id, Status.SUCCESS)


def scripted(*answers: int | type[httpx.TransportError]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A client whose transport plays ``answers`` in order: status codes, or transport errors to raise."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": f"scripted {answer}"})
        raise answer("scripted", request=request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://api"), seen


def FAST(client: httpx.AsyncClient) -> HttpStatusReporter:  # noqa: N802 - reads as a constant
    return HttpStatusReporter(client, backoff=0.001)


async def test_transient_failures_are_retried() -> None:
    client, seen = scripted(httpx.ConnectError, 503, 200)
    async with FAST(client) as reporter:
        await reporter.step_status(uuid.UUID(int=1), Status.RUNNING, exit_code=None, attempt=2)
    assert len(seen) == 3
    assert seen[-1].method == "PUT"
    assert seen[-1].url.path == f"/v1/steps/{uuid.UUID(int=1)}/status"
    assert seen[-1].read() == b'{"status":"running","attempt":2}'


async def test_retries_are_bounded() -> None:
    client, seen = scripted(502, 503, 500)
    async with FAST(client) as reporter:
        with pytest.raises(TransientError, match="HTTP 500: scripted 500"):
            await reporter.step_status(uuid.UUID(int=1), Status.RUNNING)
    assert len(seen) == 3

    client, seen = scripted(httpx.ReadTimeout, httpx.ConnectError, httpx.ConnectError)
    async with FAST(client) as reporter:
        with pytest.raises(ServiceUnavailableError, match="cannot be reached"):
            await reporter.step_status(uuid.UUID(int=1), Status.RUNNING)
    assert len(seen) == 3


@pytest.mark.parametrize(("code", "error"), [(400, InvalidInputError), (422, InvalidInputError), (403, PermanentError)])
async def test_client_errors_are_permanent_and_not_retried(code: int, error: type[PermanentError]) -> None:
    client, seen = scripted(code)
    async with FAST(client) as reporter:
        with pytest.raises(error, match=f"HTTP {code}"):
            await reporter.step_status(uuid.UUID(int=1), Status.RUNNING)
    assert len(seen) == 1


async def test_from_url_against_nothing_is_unavailable() -> None:
    reporter = HttpStatusReporter.from_url("http://127.0.0.1:9", timeout=1.0, backoff=0.001)
    try:
        with pytest.raises(ServiceUnavailableError):
            await reporter.step_status(uuid.UUID(int=1), Status.RUNNING)
    finally:
        await reporter.aclose()

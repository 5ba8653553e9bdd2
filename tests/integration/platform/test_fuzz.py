"""schemathesis against the running API's OpenAPI (issue 10, item 8): every operation, a valid token.

The API is served by uvicorn on a loopback port, in a thread with its own event loop and its own
connections (a fresh PostgreSQL database, a NATS server, a bucket), as ``forge-api`` serves it;
schemathesis reads ``/schema/openapi.json`` from it and sends generated requests, valid and invalid
(``GenerationMode.all``), with a token of the test issuer holding every role.

Every response must pass schemathesis' checks: no 5xx, the status code and content type documented
for the operation, the body and headers valid against the documented schema, and invalid input
refused with a 4xx. The number of examples per operation is bounded (:data:`EXAMPLES`), so the run
takes seconds, and hypothesis' randomness is derandomized: CI runs the same cases every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import GenerationMode, checks

from forge.adapters.env_secrets import EnvSecretProvider
from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.adapters.postgres_store import PostgresStore
from forge.api.app import create_app
from forge.api.errors import PROBLEM_JSON
from forge.api.services import ApiServices
from forge.embedded.nats import start_nats
from forge.embedded.process import ServiceProcess, free_port
from forge.ports import ObjectStore
from forge.ports.fakes import MemoryBus, MemoryStore
from forge.settings import ObjectStoreSettings
from forge.testing.postgres import create_database_async

from .support import api_services, auth_headers

EXAMPLES = 25
"""Examples per operation and generation mode (about 1,000 requests in all)."""

BEYOND_THE_SCHEMA = {
    ("POST", "/v1/repositories"): "the clone URL policy: a git scheme, no credentials, no private host",
    ("POST", "/v1/runs"): "a branch or a tag, not both",
    ("POST", "/v1/webhooks/github"): "X-GitHub-Event is 1-100 of [a-z_]; a bad signature is 401, not a 400",
    ("GET", "/v1/releases/{owner}/{repo}/{project}/{ref}"): "a ref is a release number, an alias or a sha prefix",
}
"""Operations whose rules JSON Schema cannot state: a schema-valid request may get a documented 400.

Everywhere else a request the schema accepts must not be refused as invalid (``positive_data_acceptance``).
"""


class _Server(uvicorn.Server):
    """uvicorn that says when it listens (an event, not a sleep)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        self._ready.set()


class _ServedApi:
    """The API on ``127.0.0.1:<port>`` in a thread with its own event loop and connections."""

    def __init__(self, postgres: ServiceProcess, nats: ServiceProcess, s3: ServiceProcess) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._postgres, self._nats, self._s3 = postgres, nats, s3
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-api", daemon=True)

    def __enter__(self) -> _ServedApi:
        self._thread.start()
        while not self._ready.wait(0.1):
            if not self._thread.is_alive():
                raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            raise

    async def _serve(self) -> None:
        async with _connected(self._postgres, self._nats, self._s3) as services:
            port = int(self.url.rsplit(":", 1)[1])
            config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="critical")
            self._server = _Server(config, self._ready)
            await self._server.serve()


@contextlib.asynccontextmanager
async def _connected(postgres: ServiceProcess, nats: ServiceProcess, s3: ServiceProcess) -> AsyncIterator[ApiServices]:
    dsn = await create_database_async(postgres.url, f"fuzz_{uuid.uuid4().hex[:12]}")
    store = await PostgresStore.connect(dsn, min_size=1, max_size=5)
    await store.migrate()
    bus = await NatsBus.connect(nats.url)
    settings = ObjectStoreSettings(
        endpoint=s3.url,
        access_key=s3.extra["access_key"],
        secret_key=SecretStr(s3.extra["secret_key"]),
        bucket=f"fuzz-{uuid.uuid4().hex[:12]}",
    )
    try:
        async with MinioObjectStore.from_settings(settings) as objects:
            await objects.ensure_bucket()
            yield api_services(store, bus, objects)
    finally:
        await bus.close()
        await store.close()


@pytest.fixture(scope="module")
def served_api(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: ServiceProcess, s3_server: ServiceProcess
) -> Iterator[_ServedApi]:
    nats = start_nats(tmp_path_factory.mktemp("fuzz-nats"))
    try:
        with _ServedApi(postgres_server, nats, s3_server) as api:
            yield api
    finally:
        nats.stop()


def _document() -> dict[str, Any]:
    """The OpenAPI document, from the app itself (it depends on the routes only, not on connections)."""
    store, bus = MemoryStore(), MemoryBus()  # never called: building the document makes no request
    offline = ApiServices(
        database=store,
        repositories=store,
        runs=store,
        executions=store,
        releases=store,
        bus=bus,
        objects=cast(ObjectStore, None),
        secrets=EnvSecretProvider(environ={}),
        deployments=store,
        approvals=store,
    )
    document: dict[str, Any] = create_app(offline).openapi_schema.to_schema()
    return document


schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(modes=list(GenerationMode), allow_extra_parameters=False)
# Unknown query parameters are ignored by intent (as HTTP APIs customarily do), never refused.


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_openapi_contract(case: schemathesis.Case[Any], served_api: _ServedApi) -> None:
    operation = (case.method.upper(), case.path)
    if operation not in BEYOND_THE_SCHEMA:
        case.call_and_validate(base_url=served_api.url, headers=auth_headers())
        return
    response = case.call_and_validate(
        base_url=served_api.url, headers=auth_headers(), excluded_checks=[checks.positive_data_acceptance]
    )
    if response.status_code == 400:
        assert response.headers["content-type"] == [PROBLEM_JSON], response.text

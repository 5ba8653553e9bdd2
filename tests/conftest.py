"""Markers by folder, and session fixtures that start real services on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from forge.embedded.process import ServiceProcess

_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if folder in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, folder))
        elif folder == "golden":
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from forge.embedded.nats import start_nats

    proc = start_nats(tmp_path_factory.mktemp("nats"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from forge.embedded.s3 import start_s3

    proc = start_s3(tmp_path_factory.mktemp("s3"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from forge.testing.postgres import start_postgres

    proc = start_postgres(tmp_path_factory.mktemp("pg"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from forge.testing.git_daemon import start_git_daemon

    proc = start_git_daemon(tmp_path_factory.mktemp("git-served"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from forge.embedded.registry import start_registry

    proc = start_registry(tmp_path_factory.mktemp("registry"))
    yield proc
    proc.stop()

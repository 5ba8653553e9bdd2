"""Secrets by grant (issue 7): a step reads only the secrets its repository was granted, never a platform one.

Each test plants the secret's value where the worker would find it, runs a step that asks for it, and
checks the host: the step never started (a marker file it would write is absent), the cause is one
line naming the secret, and the value is in no log, plain or base64.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from forge.adapters.minio_objects import MinioObjectStore
from forge.adapters.nats_bus import NatsBus
from forge.jobs.dispatch import dispatch
from forge.settings import CiSettings

from .conftest import StartWorker
from .support import ci_job, standard_repo

VALUE = "s3cr3t-v4lue-0123456789"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "src" / "mono.git"
    return str(path), standard_repo(path)


def _plant(settings: CiSettings, name: str, value: str = VALUE) -> None:
    assert settings.secrets_dir is not None
    (settings.secrets_dir / name).write_text(value)


async def _refused(
    bus: NatsBus,
    objects: MinioObjectStore,
    start_worker: StartWorker,
    repo: tuple[str, str],
    out: Path,
    *,
    secrets: list[str],
    granted: list[str],
) -> str:
    """Run the step; assert it failed before it started and no value reached its log; the cause."""
    url, sha = repo
    script = f'touch "{out}/started"; echo "$*"; env | base64'
    job = ci_job(url, sha, script, secrets=secrets, granted=granted)
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert not result.success
    assert result.error is not None
    assert result.error.code == "step_failed"
    assert result.error.details["exit_code"] is None
    assert not (out / "started").exists(), "the step started"
    log = await objects.get(result.error.details["logs_key"])
    for form in (VALUE.encode(), base64.b64encode(VALUE.encode()), VALUE[::-1].encode()):
        assert form not in log
        assert form.decode() not in result.error.message
    causes = [line for line in log.decode().splitlines() if line.startswith("forge: secret")]
    assert len(causes) == 1, log
    return causes[0]


async def test_a_step_naming_an_ungranted_secret_fails_before_it_starts(
    repo: tuple[str, str],
    tmp_path: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    _plant(ci_settings, "DEPLOY_KEY")
    _plant(ci_settings, "NPM_TOKEN", "granted-value-42")
    cause = await _refused(
        bus, objects, start_worker, repo, tmp_path, secrets=["NPM_TOKEN", "DEPLOY_KEY"], granted=["NPM_TOKEN"]
    )
    assert "secret DEPLOY_KEY is not granted to repository acme/mono" in cause
    assert "NPM_TOKEN" not in cause


@pytest.mark.parametrize("name", ["FORGE_DATABASE__URL", "FORGE_OBJECTS__SECRET_KEY", "FORGE_SECRET_HOOK"])
async def test_a_platform_name_is_never_a_step_secret_even_if_the_payload_says_granted(
    repo: tuple[str, str],
    tmp_path: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
    name: str,
) -> None:
    """A forged payload granting a FORGE_* name still resolves nothing: the name is a platform one."""
    _plant(ci_settings, name)
    cause = await _refused(bus, objects, start_worker, repo, tmp_path, secrets=[name], granted=[name])
    assert f"secret {name} is a platform name (FORGE_*)" in cause


async def test_a_repository_without_a_grant_reads_no_secret(
    repo: tuple[str, str],
    tmp_path: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    _plant(ci_settings, "GITHUB_WEBHOOK")  # another repository's webhook secret, in the same directory
    cause = await _refused(bus, objects, start_worker, repo, tmp_path, secrets=["GITHUB_WEBHOOK"], granted=[])
    assert "secret GITHUB_WEBHOOK is not granted to repository acme/mono" in cause


async def test_a_granted_secret_reaches_the_step_masked(
    repo: tuple[str, str],
    tmp_path: Path,
    ci_settings: CiSettings,
    start_worker: StartWorker,
    bus: NatsBus,
    objects: MinioObjectStore,
) -> None:
    _plant(ci_settings, "NPM_TOKEN")
    url, sha = repo
    job = ci_job(url, sha, f'printf %s "$NPM_TOKEN" > "{tmp_path}/got"; echo "t=$NPM_TOKEN"', secrets=["NPM_TOKEN"])
    assert job.payload.granted_secrets == ["NPM_TOKEN"]  # type: ignore[union-attr]
    async with start_worker():
        result = await dispatch(bus, job, timeout=60)
    assert result.success, result.error
    assert result.data is not None
    assert (tmp_path / "got").read_text() == VALUE
    log = await objects.get(result.data["logs_key"])
    assert b"t=***" in log
    assert VALUE.encode() not in log

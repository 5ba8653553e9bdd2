"""What only the oras adapter meets: a registry that is down, refuses credentials or serves corrupt bytes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess
from forge.embedded.registry import start_registry
from forge.errors import InvalidInputError, NotFoundError, PermanentError, ServiceUnavailableError
from forge.ports.registry import Layer
from forge.settings import RegistrySettings

ARTIFACT = "application/vnd.forge.artifact.v1"
LAYER = Layer("application/vnd.forge.artifact.metadata.v1+json", b'{"name":"api"}')
PASSWORD = "s3cret-pw"
STORAGE = "storage/docker/registry/v2/blobs/sha256"  # docker-registry's filesystem layout under data_dir


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd entry, as docker-registry's ``auth.htpasswd`` wants, from the stdlib alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves the stdlib in 3.13
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: checked per request
    if not hashed or not hashed.startswith("$2"):
        pytest.fail("this libcrypt cannot make bcrypt hashes; docker-registry's htpasswd needs them")
    return f"{user}:{hashed}\n"


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[ServiceProcess]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("forge", PASSWORD))
    proc = start_registry(tmp_path / "registry", htpasswd=htpasswd)
    yield proc
    proc.stop()


async def test_a_stopped_registry_is_a_transient_error_naming_its_host(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "registry")
    registry = OrasRegistry(server.url)
    digest = await registry.push_artifact("o/r/p", artifact_type=ARTIFACT, layers=[LAYER], annotations={})
    host = server.url.removeprefix("http://")
    server.stop()

    for call in (
        registry.manifest("o/r/p", digest),
        registry.push_artifact("o/r/p", artifact_type=ARTIFACT, layers=[LAYER], annotations={}),
        registry.tags("o/r/p"),
    ):
        with pytest.raises(ServiceUnavailableError) as caught:
            await call
        assert host in str(caught.value)


async def test_credentials_are_checked_and_never_echoed(auth_registry: ServiceProcess) -> None:
    good = OrasRegistry.from_settings(
        RegistrySettings.model_validate({"url": auth_registry.url, "username": "forge", "password": PASSWORD})
    )
    digest = await good.push_artifact("o/r/p", artifact_type=ARTIFACT, layers=[LAYER], annotations={}, tags=["v1"])
    assert (await good.manifest("o/r/p", "v1")).digest == digest
    layer = (await good.manifest("o/r/p", digest)).content["layers"][0]["digest"]
    assert await good.blob("o/r/p", layer, max_bytes=100) == LAYER.data
    assert await good.tags("o/r/p") == ["v1"]

    wrong = OrasRegistry(auth_registry.url, username="forge", password="not-the-password")
    anonymous = OrasRegistry(auth_registry.url)
    for registry in (wrong, anonymous):
        for call in (
            registry.manifest("o/r/p", "v1"),
            registry.push_artifact("o/r/q", artifact_type=ARTIFACT, layers=[LAYER], annotations={}),
        ):
            with pytest.raises(PermanentError) as caught:
                await call
            assert caught.value.code == "registry_denied"
            assert "not-the-password" not in str(caught.value)
            assert PASSWORD not in str(caught.value)
    with pytest.raises(NotFoundError):  # nothing was pushed by the refused clients
        await good.tags("o/r/q")


async def test_bytes_that_do_not_match_their_digest_are_refused(registry_server: ServiceProcess) -> None:
    registry = OrasRegistry(registry_server.url)
    data = b"the real content"
    digest = await registry.push_artifact(
        "o/r/corrupt", artifact_type=ARTIFACT, layers=[Layer("application/octet-stream", data)], annotations={}
    )
    layer = (await registry.manifest("o/r/corrupt", digest)).content["layers"][0]["digest"]
    hex_digest = layer.removeprefix("sha256:")
    stored = registry_server.log.parent / STORAGE / hex_digest[:2] / hex_digest / "data"
    stored.write_bytes(b"the fake content")  # same size: only the digest can tell

    with pytest.raises(PermanentError) as caught:
        await registry.blob("o/r/corrupt", layer, max_bytes=100)
    assert caught.value.code == "digest_mismatch"


async def test_nothing_is_printed_on_stdout(registry_server: ServiceProcess, capfd: pytest.CaptureFixture[str]) -> None:
    registry = OrasRegistry(registry_server.url)
    with pytest.raises(NotFoundError):
        await registry.manifest("o/r/none", "v1")
    with pytest.raises(NotFoundError):
        await registry.tags("o/r/none")
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:5000", "http://user:pw@127.0.0.1:5000", "http://127.0.0.1:5000/v2/", "127.0.0.1:5000"],
)
def test_a_bad_url_is_invalid_input_without_its_credentials(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        OrasRegistry(url)
    assert "FORGE_REGISTRY__URL" in str(caught.value)
    assert "pw" not in str(caught.value)

"""SecretProvider compliance: the same tests against every adapter (the environment/files provider and the
Kubernetes Secret provider on a real HTTP server serving Secret shapes), then what only Kubernetes has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from forge.adapters.env_secrets import EnvSecretProvider, GrantedSecrets
from forge.adapters.k8s_client import KubeClient
from forge.adapters.k8s_secrets import KubernetesSecretProvider, secret_provider
from forge.errors import AuthorizationError, InvalidInputError, NotFoundError, PermanentError, TransientError
from forge.ports import SecretProvider
from forge.settings import SecretsSettings, Settings

from .support import TOKEN, FakeKube, secret

Make = Callable[[dict[str, str]], Awaitable[SecretProvider]]
VALUES = {"TOKEN": "s3cr=t/+", "MULTI": "line1\nline2", "UNICODE": "pâté ✓", "EMPTY": ""}


@pytest.fixture(params=["env", "kubernetes"])
def make(request: pytest.FixtureRequest, kube: FakeKube, kube_client: KubeClient) -> Make:
    async def env(values: dict[str, str]) -> SecretProvider:
        return EnvSecretProvider(None, environ={f"FORGE_SECRET_{k}": v for k, v in values.items()})

    async def kubernetes(values: dict[str, str]) -> SecretProvider:
        kube.put_secret(secret("forge-secrets", values, namespace="forge"))
        return KubernetesSecretProvider(kube_client, namespace="forge", secret="forge-secrets", cache=0)

    return env if request.param == "env" else kubernetes


async def test_values_come_back_exactly_as_stored(make: Make) -> None:
    provider = await make(VALUES)
    for name, value in VALUES.items():
        assert await provider.get(name) == value


async def test_an_unknown_secret_is_not_found_naming_it_and_no_value(make: Make) -> None:
    provider = await make(VALUES)
    with pytest.raises(NotFoundError, match=r"^secret GHOST not found \(") as info:
        await provider.get("GHOST")
    assert info.value.details == {"secret": "GHOST"}
    assert not any(v and v in info.value.message for v in VALUES.values())


@pytest.mark.parametrize("name", ["../etc/passwd", "a-b", "", "1X", "a.b", "X/Y"])
async def test_names_must_be_variable_names(make: Make, name: str) -> None:
    with pytest.raises(InvalidInputError, match="not an environment variable name"):
        await (await make(VALUES)).get(name)


async def test_a_repository_sees_only_what_it_was_granted(make: Make) -> None:
    granted = GrantedSecrets(await make({**VALUES, "FORGE_X": "platform"}), ["TOKEN", "FORGE_X"], repository="acme/app")
    assert await granted.get("TOKEN") == VALUES["TOKEN"]
    with pytest.raises(AuthorizationError, match="not granted"):
        await granted.get("MULTI")
    with pytest.raises(AuthorizationError, match="platform name"):
        await granted.get("FORGE_X")


# -- Kubernetes only ------------------------------------------------------------------------------


async def test_a_missing_secret_object_is_not_found_naming_where(kube_client: KubeClient) -> None:
    provider = KubernetesSecretProvider(kube_client, namespace="forge", secret="nope")
    with pytest.raises(NotFoundError, match=r"secret TOKEN not found \(Secret forge/nope does not exist\)"):
        await provider.get("TOKEN")


async def test_one_read_serves_lookups_until_the_cache_expires(kube: FakeKube, kube_client: KubeClient) -> None:
    now = [100.0]
    kube.put_secret(secret("forge-secrets", {"TOKEN": "v1"}))
    provider = KubernetesSecretProvider(
        kube_client, namespace="forge", secret="forge-secrets", cache=10, clock=lambda: now[0]
    )
    assert [await provider.get("TOKEN"), await provider.get("TOKEN")] == ["v1", "v1"]
    kube.put_secret(secret("forge-secrets", {"TOKEN": "v2"}))
    now[0] += 9.9
    assert await provider.get("TOKEN") == "v1"
    now[0] += 0.2
    assert await provider.get("TOKEN") == "v2"
    assert len(kube.requests) == 2


async def test_api_refusals_and_outages_keep_their_meaning(kube: FakeKube, kube_client: KubeClient) -> None:
    kube.put_secret(secret("forge-secrets", {"TOKEN": "v1"}))
    provider = KubernetesSecretProvider(kube_client, namespace="forge", secret="forge-secrets", cache=0)
    kube.forbidden = True
    with pytest.raises(PermanentError, match=r'403 secrets "forge-secrets" is forbidden'):
        await provider.get("TOKEN")
    kube.forbidden, kube.down = False, True
    with pytest.raises(TransientError):
        await provider.get("TOKEN")
    kube.down = False
    assert await provider.get("TOKEN") == "v1"


async def test_settings_choose_the_provider_env_by_default(kube: FakeKube, tmp_path: Path) -> None:
    assert isinstance(secret_provider(Settings()), EnvSecretProvider)
    kube.put_secret(secret("ci", {"TOKEN": "from-k8s"}, namespace="builds"))
    chosen = SecretsSettings(
        provider="kubernetes", server=kube.url, token=SecretStr(TOKEN), namespace="builds", secret="ci"
    )
    provider = secret_provider(Settings(secrets=chosen))
    assert isinstance(provider, KubernetesSecretProvider)
    try:
        assert await provider.get("TOKEN") == "from-k8s"
    finally:
        await provider.close()

"""ArgoCDApplications against a real HTTP server serving Argo CD's Application shapes: the status read,
and the Kubernetes API's answers translated into the error tree."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from forge.adapters.k8s_argocd import ArgoCDApplications
from forge.adapters.k8s_client import KubeClient
from forge.errors import NotFoundError, PermanentError, ServiceUnavailableError, TransientError
from forge.ports.deployer import ApplicationStatus, Health, OperationPhase, Sync
from forge.settings import ArgoCDSettings, KubeClientSettings

from .support import TOKEN, FakeKube, application

REV = "a" * 40


@pytest.fixture
def apps(kube_client: KubeClient) -> ArgoCDApplications:
    return ArgoCDApplications(kube_client, namespace="argocd")


async def test_synced_and_healthy_with_the_last_sync(kube: FakeKube, apps: ArgoCDApplications) -> None:
    kube.put_application(application("acme-shop-web", revision=REV))
    assert await apps.application("acme-shop-web") == ApplicationStatus(
        name="acme-shop-web",
        sync=Sync.SYNCED,
        revision=REV,
        health=Health.HEALTHY,
        operation=OperationPhase.SUCCEEDED,
        operation_message="successfully synced (all tasks run)",
        operation_revision=REV,
    )
    assert kube.requests == ["/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/acme-shop-web"]


async def test_degraded_carries_both_messages(kube: FakeKube, apps: ArgoCDApplications) -> None:
    kube.put_application(
        application(
            "acme-shop-web",
            revision=REV,
            health="Degraded",
            health_message='Deployment "web" exceeded its progress deadline',
            phase="Failed",
            operation_message="one or more objects failed to apply",
        )
    )
    status = await apps.application("acme-shop-web")
    assert (status.health, status.operation) == (Health.DEGRADED, OperationPhase.FAILED)
    assert status.health_message == 'Deployment "web" exceeded its progress deadline'
    assert status.operation_message == "one or more objects failed to apply"


async def test_a_new_application_has_no_status_yet(kube: FakeKube, apps: ArgoCDApplications) -> None:
    kube.put_application(application("acme-shop-web", sync=None, health=None, phase=None))
    assert await apps.application("acme-shop-web") == ApplicationStatus(name="acme-shop-web")


async def test_an_application_that_does_not_exist_is_not_found(kube: FakeKube, apps: ArgoCDApplications) -> None:
    with pytest.raises(NotFoundError, match=r'404 applications.argoproj.io "ghost" not found') as info:
        await apps.application("ghost")
    assert info.value.details["status"] == 404


async def test_forbidden_is_permanent_with_the_rbac_message(kube: FakeKube, apps: ArgoCDApplications) -> None:
    kube.forbidden = True
    with pytest.raises(PermanentError, match=r"403 .*cannot get resource \"applications\"") as info:
        await apps.application("acme-shop-web")
    assert info.value.code == "forbidden"


async def test_a_wrong_token_is_permanent(kube: FakeKube) -> None:
    client = KubeClient.connect(KubeClientSettings(server=kube.url, token=SecretStr("wrong")))
    try:
        with pytest.raises(PermanentError, match="401 Unauthorized") as info:
            await ArgoCDApplications(client).application("acme-shop-web")
        assert info.value.code == "unauthorized"
    finally:
        await client.close()


async def test_an_api_server_away_is_transient(kube: FakeKube, apps: ArgoCDApplications) -> None:
    kube.put_application(application("acme-shop-web", revision=REV))
    kube.outage.fail_next(1, retry_after="2")
    with pytest.raises(ServiceUnavailableError, match="503") as info:
        await apps.application("acme-shop-web")
    assert info.value.retry_after == 2.0
    kube.down = True
    with pytest.raises(ServiceUnavailableError, match="unreachable"):
        await apps.application("acme-shop-web")
    kube.down = False
    assert (await apps.application("acme-shop-web")).health is Health.HEALTHY


async def test_nothing_listening_is_transient(kube: FakeKube) -> None:
    url = kube.url
    kube.close()
    settings = ArgoCDSettings(enabled=True, server=url, token=SecretStr(TOKEN), request_timeout=2)
    apps = ArgoCDApplications.from_settings(settings)
    try:
        with pytest.raises(TransientError, match=r"kubernetes http://127\.0\.0\.1:\d+: applications"):
            await apps.application("acme-shop-web")
    finally:
        await apps.close()

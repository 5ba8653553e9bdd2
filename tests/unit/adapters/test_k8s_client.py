"""KubeClient configuration (server + token, kubeconfig, in-cluster) and Application status parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from forge.adapters.k8s_argocd import application_status
from forge.adapters.k8s_client import KubeClient
from forge.errors import InvalidInputError
from forge.ports.deployer import ApplicationStatus, Health, OperationPhase, Sync
from forge.settings import KubeClientSettings

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://kube.test:6443", insecure-skip-tls-verify: true}
users:
- name: robot
  user: {token: kubeconfig-token}
contexts:
- name: main
  context: {cluster: test, user: robot, namespace: forge}
- name: other
  context: {cluster: test, user: robot}
current-context: main
"""


async def test_an_explicit_server_wins_and_carries_the_bearer_token(tmp_path: Path) -> None:
    settings = KubeClientSettings(
        server="https://api.example:6443/", token=SecretStr("t0k"), kubeconfig=tmp_path / "ignored", verify_tls=False
    )
    client = KubeClient.connect(settings)
    try:
        assert client.server == "https://api.example:6443"
    finally:
        await client.close()


async def test_a_kubeconfig_file_gives_server_and_credentials(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(KUBECONFIG)
    client = KubeClient.connect(KubeClientSettings(kubeconfig=tmp_path / "config", context="other"))
    try:
        assert client.server == "https://kube.test:6443"
    finally:
        await client.close()


def test_no_configuration_at_all_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InvalidInputError, match=r"cannot load the in-cluster config.*set a server and token"):
        KubeClient.connect(KubeClientSettings())
    with pytest.raises(InvalidInputError, match=r"cannot load the kubeconfig .*missing"):
        KubeClient.connect(KubeClientSettings(kubeconfig=tmp_path / "missing"))


def test_unknown_or_odd_status_values_read_unknown() -> None:
    odd = {
        "status": {
            "sync": {"status": "Drifting", "revision": 7},
            "health": {"status": "Healthy", "message": ""},
            "operationState": {"phase": "Paused", "syncResult": "?"},
        }
    }
    assert application_status("a", odd) == ApplicationStatus(
        name="a", sync=Sync.UNKNOWN, health=Health.HEALTHY, operation=OperationPhase.UNKNOWN
    )
    assert application_status("b", {"status": None}) == ApplicationStatus(name="b")

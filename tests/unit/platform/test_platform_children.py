"""The children of the root Application: pinned, ordered by sync waves, and the monitoring stack
installed like every other child (docs/deploy.md, docs/operations.md "Observe")."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .checks import (
    GITOPS_REPOSITORY,
    PLATFORM,
    SYNC_WAVE,
    Obj,
    build,
    children_without_wave,
    kubectl,
    load,
    prometheus_objects_before_their_crds,
    revisions_off_the_root,
    sync_wave,
    unpinned_sources,
)

APP_OVERLAYS = ["apps/overlays/dev", "apps/overlays/prod"]
MONITORING_CHARTS = {
    "prometheus-operator-crds": "prometheus-operator-crds",
    "kube-prometheus-stack": "kube-prometheus-stack",
    "grafana": "grafana",
    "loki": "loki",
    "tempo": "tempo",
    "alloy": "alloy",
}
_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def _root() -> Obj:
    (root,) = load((PLATFORM / "root.yaml").read_text(encoding="utf-8"))
    return root


def _apps(overlay: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in build(overlay) if o["kind"] == "Application"}


def _rendered(path: str) -> Sequence[Obj]:
    return build(path.removeprefix("gitops/platform/"))


def _values(app: Obj) -> dict[str, Any]:
    values: dict[str, Any] = app["spec"]["source"]["helm"]["valuesObject"]
    return values


def _at(values: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        assert isinstance(values, dict), f"{dotted}: {key!r} is under a {type(values).__name__}"
        assert key in values, f"{dotted}: no {key!r}"
        values = values[key]
    return values


def _one(objects: Sequence[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


# Every child: a concrete version and a sync wave.


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_every_child_is_pinned_to_a_concrete_version_and_has_a_sync_wave(overlay: str) -> None:
    objects = build(overlay)
    root = _root()
    assert unpinned_sources(objects) == []
    assert revisions_off_the_root(objects, root) == []
    assert children_without_wave(objects) == []
    for app in _apps(overlay).values():
        source = app["spec"]["source"]
        if source["repoURL"] not in {root["spec"]["source"]["repoURL"], GITOPS_REPOSITORY}:  # branches by design
            assert _VERSION.match(str(source["targetRevision"])), app["metadata"]["name"]


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_service_monitors_and_rules_are_applied_after_the_prometheus_operator_crds(overlay: str) -> None:
    objects = build(overlay)
    assert prometheus_objects_before_their_crds(objects, _rendered) == []
    apps = _apps(overlay)
    # what the check sees as creating them: our Forge overlay, cert-manager's ServiceMonitor, the stack
    creators = {"forge", "cert-manager", "kube-prometheus-stack"}
    crds = sync_wave(apps["prometheus-operator-crds"])
    assert crds is not None
    for name in creators:
        wave = sync_wave(apps[name])
        assert wave is not None, name
        assert wave > crds, name


def test_the_wave_checks_catch_a_missing_wave_an_early_service_monitor_and_a_drifting_revision() -> None:
    apps = _apps("apps/overlays/prod")
    early = copy.deepcopy(apps["cert-manager"])
    early["metadata"]["annotations"][SYNC_WAVE] = apps["prometheus-operator-crds"]["metadata"]["annotations"][SYNC_WAVE]
    crds = apps["prometheus-operator-crds"]
    problems = prometheus_objects_before_their_crds([crds, early], _rendered)
    assert [p.split(":")[0] for p in problems] == ["Application/cert-manager"]
    forge = copy.deepcopy(apps["forge"])
    forge["metadata"]["annotations"][SYNC_WAVE] = "-5"
    assert [p.split(":")[0] for p in prometheus_objects_before_their_crds([crds, forge], _rendered)] == [
        "Application/forge"
    ]
    assert prometheus_objects_before_their_crds([early], _rendered) == [
        "0 Applications install the chart prometheus-operator-crds (one is needed)"
    ]
    del forge["metadata"]["annotations"][SYNC_WAVE]
    assert children_without_wave([forge]) == [f"Application/forge: no integer {SYNC_WAVE}"]
    forge["spec"]["source"]["targetRevision"] = "some-branch"
    assert len(revisions_off_the_root([forge], _root())) == 1
    unpinned = copy.deepcopy(apps["loki"])
    unpinned["spec"]["source"]["targetRevision"] = "6.*"
    assert unpinned_sources([unpinned]) == ["Application/loki: chart loki version '6.*' is not exact"]


# The monitoring stack.


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_the_monitoring_stack_is_a_set_of_children_of_the_root(overlay: str) -> None:
    apps = _apps(overlay)
    charts = {name: apps[name]["spec"]["source"]["chart"] for name in MONITORING_CHARTS}
    assert charts == MONITORING_CHARTS
    project = _one(build(overlay), "AppProject", "forge-platform")
    for name in MONITORING_CHARTS:
        app = apps[name]
        assert app["spec"]["project"] == "forge-platform"
        assert app["spec"]["source"]["repoURL"] in project["spec"]["sourceRepos"]
        if name != "prometheus-operator-crds":  # cluster-scoped CRDs only
            assert app["spec"]["destination"]["namespace"] == "monitoring"
    # the first child to create the namespace puts it in the ambient mesh: the forge
    # AuthorizationPolicies admit callers from monitoring by their mesh identity
    creators = [a for a in apps.values() if "CreateNamespace=true" in a["spec"]["syncPolicy"].get("syncOptions", [])]
    first = min(
        (a for a in creators if a["spec"]["destination"].get("namespace") == "monitoring"),
        key=lambda a: sync_wave(a) or 0,
    )
    assert first["metadata"]["name"] == "forge-monitoring"
    labels = first["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    assert labels["istio.io/dataplane-mode"] == "ambient"
    values = _values(apps["kube-prometheus-stack"])
    assert values["crds"]["enabled"] is False  # the CRDs are prometheus-operator-crds' alone
    assert values["grafana"]["enabled"] is False  # Grafana is its own child
    # what the manifests rely on: Alloy remote-writes Forge's series, Prometheus loads every rule
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["enableRemoteWriteReceiver"] is True
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    # cert-manager's ServiceMonitor carries the label that kube-prometheus-stack's Prometheus selects
    labels = _at(_values(apps["cert-manager"]), "prometheus.servicemonitor.labels")
    assert labels == {"release": "kube-prometheus-stack"}
    # its controller configuration file is of the API group cert-manager reads (a typo is ignored silently)
    config = _values(apps["cert-manager"])["config"]
    assert config["apiVersion"] == "controller.config.cert-manager.io/v1alpha1"
    assert config["enableGatewayAPI"] is True


# Values that matter at scale, set explicitly (path: what it must hold).
_AT_SCALE: dict[str, dict[str, type | tuple[type, ...]]] = {
    "kube-prometheus-stack": {
        "prometheus.prometheusSpec.replicas": int,
        "prometheus.prometheusSpec.retention": str,
        "prometheus.prometheusSpec.retentionSize": str,
        "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.resources.requests.storage": str,
        "prometheus.prometheusSpec.resources.limits": dict,
        "alertmanager.alertmanagerSpec.replicas": int,
        "alertmanager.alertmanagerSpec.retention": str,
        "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate.spec.resources.requests.storage": str,
        "alertmanager.alertmanagerSpec.resources.limits": dict,
        "prometheusOperator.resources.limits": dict,
        "kube-state-metrics.resources.limits": dict,
        "prometheus-node-exporter.resources.limits": dict,
    },
    "grafana": {
        "replicas": int,
        "persistence.enabled": bool,
        "persistence.size": str,
        "resources.limits": dict,
        "sidecar.resources.limits": dict,
    },
    "loki": {
        "singleBinary.replicas": int,
        "singleBinary.persistence.size": str,
        "singleBinary.resources.limits": dict,
        "gateway.resources.limits": dict,
        "loki.limits_config.retention_period": str,
        "loki.compactor.retention_enabled": bool,
    },
    "tempo": {
        "replicas": int,
        "tempo.retention": str,
        "tempo.resources.limits": dict,
        "persistence.enabled": bool,
        "persistence.size": str,
    },
    "alloy": {
        "controller.replicas": int,
        "alloy.resources.limits": dict,
        "configReloader.resources.limits": dict,
    },
}


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
@pytest.mark.parametrize("name", sorted(_AT_SCALE))
def test_the_values_that_matter_at_scale_are_explicit(overlay: str, name: str) -> None:
    values = _values(_apps(overlay)[name])
    for path, kind in _AT_SCALE[name].items():
        value = _at(values, path)
        assert isinstance(value, kind), f"{name}: {path} = {value!r}"
        if path.endswith(".limits"):
            assert isinstance(value, dict)
            assert {"cpu", "memory"} <= value.keys(), f"{name}: {path}"
        if path.endswith("persistence.enabled"):
            assert value is True, f"{name}: {path}"


def _service(url: str) -> tuple[str, str]:
    """``(service, namespace)`` of an in-cluster URL or host:port."""
    host = re.sub(r"^\w+://", "", url).split("/")[0].split(":")[0]
    service, namespace, *_ = host.split(".")
    return service, namespace


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_dashboards_alerts_metrics_logs_and_traces_reach_the_stack(overlay: str) -> None:
    apps = _apps(overlay)
    monitoring = build("components/monitoring")
    # the dashboard: a ConfigMap with the label Grafana's sidecar loads, in the namespace it searches
    dashboard = _one(monitoring, "ConfigMap", "forge-dashboard")
    sidecar = _values(apps["grafana"])["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    assert dashboard["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert dashboard["metadata"]["namespace"] == sidecar["searchNamespace"]
    assert json.loads(dashboard["data"]["forge-overview.json"])["uid"] == "forge-overview"
    # Grafana's admin credentials: the ExternalSecret's target and keys
    admin = _values(apps["grafana"])["admin"]
    secret = _one(monitoring, "ExternalSecret", "grafana-admin")
    assert secret["spec"]["target"]["name"] == admin["existingSecret"]
    assert {d["secretKey"] for d in secret["spec"]["data"]} == {admin["userKey"], admin["passwordKey"]}
    # Alloy runs the ConfigMap of forge-monitoring, synced before it, with every variable it reads
    alloy = _values(apps["alloy"])["alloy"]
    config = _one(monitoring, "ConfigMap", alloy["configMap"]["name"])
    assert alloy["configMap"]["create"] is False
    assert config["metadata"]["namespace"] == apps["alloy"]["spec"]["destination"]["namespace"]
    text = config["data"][alloy["configMap"]["key"]]
    env = {e["name"]: e["value"] for e in alloy["extraEnv"]}
    assert set(re.findall(r'sys\.env\("(\w+)"\)', text)) == set(env)
    assert alloy["clustering"]["enabled"] is True
    assert text.count("clustering {") == 2
    assert 4318 in {p["port"] for p in alloy["extraPorts"]}
    waves = {name: sync_wave(app) for name, app in apps.items()}
    assert waves["forge-monitoring"] is not None
    for name in ("alloy", "grafana"):
        wave = waves[name]
        assert wave is not None, name
        assert wave > waves["forge-monitoring"], name
    assert apps["forge-monitoring"]["spec"]["source"]["path"] == "gitops/platform/components/monitoring"
    # where Alloy sends: the Services of the stack's releases (Argo CD's release name is the app's)
    assert _service(env["FORGE_METRICS_REMOTE_WRITE_URL"]) == ("prometheus-operated", "monitoring")
    assert _service(env["FORGE_LOGS_PUSH_URL"]) == (f"{apps['loki']['metadata']['name']}-gateway", "monitoring")
    assert _service(env["FORGE_TRACES_OTLP_ENDPOINT"]) == (apps["tempo"]["metadata"]["name"], "monitoring")
    # Grafana reads the same three
    sources = {d["uid"]: d for d in _values(apps["grafana"])["datasources"]["datasources.yaml"]["datasources"]}
    assert _service(sources["prometheus"]["url"]) == _service(env["FORGE_METRICS_REMOTE_WRITE_URL"])
    assert _service(sources["loki"]["url"]) == _service(env["FORGE_LOGS_PUSH_URL"])
    assert _service(sources["tempo"]["url"]) == _service(env["FORGE_TRACES_OTLP_ENDPOINT"])
    assert sources["loki"]["jsonData"]["derivedFields"][0]["datasourceUid"] == "tempo"
    tempo_port = _values(apps["tempo"])["tempo"]["server"]["http_listen_port"]
    assert sources["tempo"]["url"].endswith(f":{tempo_port}")  # Tempo's query API, not its receiver
    # the forge pods send traces to Alloy's Service
    forge = build(str(Path(apps["forge"]["spec"]["source"]["path"]).relative_to("gitops/platform")))
    otlp = _one(forge, "ConfigMap", "forge-config")["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert _service(otlp) == (apps["alloy"]["metadata"]["name"], "monitoring")
    assert otlp.endswith(":4318")
    # the alerts: Forge's PrometheusRule, which the stack's Prometheus selects (every rule)
    assert _one(forge, "PrometheusRule", "forge")["spec"]["groups"]


def _existing_secrets(values: Any) -> list[str]:
    """Secret names a chart's values point at (``existingSecret``, ``existingSecretAdminPassword``…)."""
    if isinstance(values, dict):
        found = [
            v
            for k, v in values.items()
            if "existingsecret" in k.lower() and not k.lower().endswith("key") and isinstance(v, str) and v
        ]
        return found + [s for v in values.values() for s in _existing_secrets(v)]
    if isinstance(values, list):
        return [s for v in values for s in _existing_secrets(v)]
    return []


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_every_secret_a_chart_is_given_comes_from_an_external_secret_of_its_namespace(overlay: str) -> None:
    apps = _apps(overlay)
    targets = {
        (o["metadata"]["namespace"], o["spec"]["target"]["name"]): {d["secretKey"] for d in o["spec"].get("data") or ()}
        for app in apps.values()
        if app["spec"]["source"]["repoURL"] == _root()["spec"]["source"]["repoURL"]
        for o in _rendered(app["spec"]["source"]["path"])
        if o["kind"] == "ExternalSecret"
    }
    named = {
        (app["spec"]["destination"]["namespace"], secret): name
        for name, app in apps.items()
        if "chart" in app["spec"]["source"]
        for secret in _existing_secrets(app["spec"]["source"].get("helm", {}).get("valuesObject"))
    }
    assert set(named.values()) >= {"minio", "harbor", "grafana"}
    assert set(named) <= set(targets), f"no ExternalSecret for {sorted(set(named) - set(targets))}"
    harbor = _values(apps["harbor"])
    key = harbor["existingSecretAdminPasswordKey"]
    assert key in targets[("harbor", harbor["existingSecretAdminPassword"])]
    assert {"rootUser", "rootPassword"} <= targets[("minio", _values(apps["minio"])["existingSecret"])]


def _build_with_component(tmp_path: Path, overlay: str, component: str) -> tuple[Obj, ...]:
    relative = os.path.relpath(PLATFORM, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{relative}/{overlay}]\ncomponents: [{relative}/{component}]\n", encoding="utf-8"
    )
    done = subprocess.run([str(kubectl()), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return load(done.stdout)


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_an_existing_stack_replaces_the_in_cluster_one_by_a_component(tmp_path: Path, overlay: str) -> None:
    objects = _build_with_component(tmp_path, overlay, "apps/components/external-monitoring")
    apps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Application"}
    assert not {"kube-prometheus-stack", "grafana", "loki", "tempo"} & set(apps)
    assert {"alloy", "forge-monitoring", "prometheus-operator-crds", "forge"} <= set(apps)
    env = {e["name"]: e["value"] for e in _values(apps["alloy"])["alloy"]["extraEnv"]}
    default = {e["name"]: e["value"] for e in _values(_apps(overlay)["alloy"])["alloy"]["extraEnv"]}
    assert set(env) == set(default)
    assert all(".monitoring.svc" not in value for value in env.values())
    assert env["FORGE_TRACES_OTLP_INSECURE"] == "false"
    assert prometheus_objects_before_their_crds(objects, _rendered) == []


# Which environments each cluster runs (docs/deploy.md "Deployments"): dev on the dev cluster.
CLUSTER_ENVIRONMENTS = {"apps/overlays/dev": {"dev"}, "apps/overlays/prod": {"staging", "production"}}


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_each_environment_of_the_cluster_syncs_the_app_of_apps_forge_writes(overlay: str) -> None:
    """The child over ``<env>/app-of-apps.yaml`` (docs/gitops.md) on the branch the controller writes,
    after Catalyst Forge itself, for environments that have an EnvironmentConfig."""
    (config,) = (o for o in build("forge/base") if o["kind"] == "ConfigMap" and "FORGE_GITOPS__BRANCH" in o["data"])
    known = {o["metadata"]["labels"]["forge.projectcatalyst.io/environment"] for o in build("components/environments")}
    apps = {n: a for n, a in _apps(overlay).items() if a["spec"]["source"]["repoURL"] == GITOPS_REPOSITORY}
    assert {a["spec"]["source"]["path"] for a in apps.values()} == CLUSTER_ENVIRONMENTS[overlay] <= known
    forge_wave = sync_wave(_apps(overlay)["forge"])
    assert forge_wave is not None
    for app in apps.values():
        source = app["spec"]["source"]
        assert source["targetRevision"] == config["data"]["FORGE_GITOPS__BRANCH"]
        assert source["directory"] == {"include": "app-of-apps.yaml"}
        assert app["spec"]["destination"]["namespace"] == "argocd"
        assert (sync_wave(app) or 0) > forge_wave


def test_argo_cd_reads_the_gitops_repository_with_the_controller_s_credentials() -> None:
    """One store entry (forge/gitops) feeds the controller's push and Argo CD's repository Secret."""
    (repository,) = (
        o
        for o in build("components/platform-secrets")
        if o["kind"] == "ExternalSecret" and o["metadata"]["namespace"] == "argocd"
    )
    assert repository["spec"]["target"]["template"]["metadata"]["labels"] == {
        "argocd.argoproj.io/secret-type": "repository"
    }
    (controller,) = (
        o for o in build("forge/base") if o["kind"] == "ExternalSecret" and o["metadata"]["name"] == "forge-controller"
    )
    keys = {d["secretKey"]: d["remoteRef"] for d in controller["spec"]["data"]}
    argo = {d["secretKey"]: d["remoteRef"] for d in repository["spec"]["data"]}
    assert argo == {
        "url": keys["FORGE_GITOPS__URL"],
        "username": keys["FORGE_GITOPS__USERNAME"],
        "password": keys["FORGE_GITOPS__PASSWORD"],
    }
    (project,) = (o for o in build("apps/base") if o["kind"] == "AppProject")
    assert GITOPS_REPOSITORY in project["spec"]["sourceRepos"]

"""gitops/platform renders with kubectl kustomize and every rendered object holds (docs/deploy.md)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from forge.domain.messages import STREAMS, JobType, job_subject
from forge.jobs.consumers import consumer_name
from forge.workflows.workers.registry import HANDLERS

from .checks import (
    PLATFORM,
    ROOT,
    Obj,
    build,
    containers,
    floating_images,
    load,
    privileged_containers,
    referenced_secrets,
    schema_problems,
    secrets_in_git,
    services_without_pods,
    unbounded_containers,
    unpinned_sources,
)

FORGE_OVERLAYS = ["forge/overlays/dev", "forge/overlays/prod"]
# An overlay with another worker pool (forge/pools/example, docs/deploy.md "Worker pools"): every
# check of the forge overlays holds for it too; test_worker_pools.py checks the pool itself.
POOL_OVERLAYS = ["forge/overlays/prod-pool-example"]
FORGE_BUILDS = [*FORGE_OVERLAYS, *POOL_OVERLAYS]
APP_OVERLAYS = ["apps/overlays/dev", "apps/overlays/prod"]
COMPONENTS = [
    "components/postgres",
    "components/environments",
    "components/issuers",
    "components/monitoring",
    "components/platform-secrets",
]
BUILDS = [*FORGE_BUILDS, *APP_OVERLAYS, *COMPONENTS]
MADE_BY_OPERATORS = {"forge-db-app": "CloudNativePG (the Cluster's app user)"}


def _root() -> tuple[Obj, ...]:
    return load((PLATFORM / "root.yaml").read_text(encoding="utf-8"))


def _one(objects: Sequence[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("directory", BUILDS)
def test_every_build_renders_and_validates(directory: str) -> None:
    objects = build(directory)
    assert objects
    assert schema_problems(objects) == []


def test_the_root_application_validates_and_points_at_the_prod_apps() -> None:
    (root,) = _root()
    assert schema_problems([root]) == []
    assert root["spec"]["source"]["path"] == "gitops/platform/apps/overlays/prod"


def test_every_application_of_ours_points_at_a_build_that_is_tested() -> None:
    paths = {
        app["spec"]["source"]["path"].removeprefix("gitops/platform/")
        for overlay in APP_OVERLAYS
        for app in build(overlay)
        if app["kind"] == "Application" and "catalyst-forge" in app["spec"]["source"]["repoURL"]
    }
    assert paths == {*FORGE_OVERLAYS, *COMPONENTS}
    assert _root()[0]["spec"]["source"]["path"].removeprefix("gitops/platform/") in APP_OVERLAYS


@pytest.mark.parametrize("directory", BUILDS)
def test_images_and_charts_are_pinned(directory: str) -> None:
    objects = build(directory)
    assert floating_images(objects) == []
    assert unpinned_sources(objects) == []


@pytest.mark.parametrize("directory", BUILDS)
def test_containers_are_bounded_and_unprivileged(directory: str) -> None:
    objects = build(directory)
    assert unbounded_containers(objects) == []
    assert privileged_containers(objects) == []


@pytest.mark.parametrize("directory", BUILDS)
def test_services_select_pods(directory: str) -> None:
    assert services_without_pods(build(directory)) == []


@pytest.mark.parametrize("directory", BUILDS)
def test_secrets_only_by_reference(directory: str) -> None:
    objects = build(directory)
    assert secrets_in_git(objects) == []
    external = {o["spec"]["target"]["name"] for o in objects if o["kind"] == "ExternalSecret"}
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] == "ExternalSecret"}
    assert referenced_secrets(objects) - external - set(MADE_BY_OPERATORS) == set()
    assert all(
        o["spec"]["secretStoreRef"]["kind"] == "ClusterSecretStore" for o in objects if o["kind"] == "ExternalSecret"
    )
    assert None not in namespaces


# The checks themselves fail on what they exist to catch.


def _bad_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad", "namespace": "forge"},
        "spec": {
            "selector": {"matchLabels": {"app": "bad"}},
            "template": {
                "metadata": {"labels": {"app": "bad"}},
                "spec": {
                    "containers": [
                        {"name": "latest", "image": "ghcr.io/acme/app:latest"},
                        {"name": "untagged", "image": "registry:5000/acme/app", "securityContext": {"runAsUser": 0}},
                    ]
                },
            },
        },
    }


def test_the_checks_catch_floating_images_missing_limits_root_and_lonely_services() -> None:
    bad = _bad_deployment()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nobody", "namespace": "forge"},
        "spec": {"selector": {"app": "nobody"}},
    }
    assert len(floating_images([bad])) == 2
    assert len(unbounded_containers([bad])) == 2
    root = privileged_containers([bad])
    assert any("untagged may run as root" in p for p in root)
    assert any("latest may run as root" in p for p in root)
    assert services_without_pods([bad, service]) == ["Service/nobody: selector {'app': 'nobody'} matches no pods"]
    pinned = copy.deepcopy(bad)
    pinned["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/acme/app@sha256:" + "a" * 64
    pinned["spec"]["template"]["spec"]["containers"][1]["image"] = "registry:5000/acme/app:1.2.3"
    assert floating_images([pinned]) == []


def test_the_checks_catch_unknown_fields_kinds_without_schema_and_unpinned_charts() -> None:
    bad = _bad_deployment()
    bad["spec"]["replica"] = 2
    assert schema_problems([bad]) != []
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema" in schema_problems([unknown])[0]
    (app,) = [copy.deepcopy(o) for o in build("apps/overlays/prod") if o["metadata"]["name"] == "nats"]
    app["spec"]["source"]["targetRevision"] = "1.x"
    assert unpinned_sources([app]) == ["Application/nats: chart nats version '1.x' is not exact"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert secrets_in_git([secret]) == ["Secret/s: a Secret in git"]


# What the platform promises, checked on the rendered objects.


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_the_controller_runs_twice_with_leader_election_on_its_lease(directory: str) -> None:
    objects = build(directory)
    controller = _one(objects, "Deployment", "forge-controller")
    assert controller["spec"]["replicas"] == 2
    ((_, container),) = containers(controller)
    env = {e["name"]: e for e in container["env"]}
    assert env["FORGE_CONTROLLER__LEADER_ELECTION"]["value"] == "true"
    assert env["FORGE_CONTROLLER__IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["FORGE_ENGINE__IMAGE"]["value"] == container["image"]  # steps run the image the controller runs
    role = _one(objects, "Role", "forge-controller")
    lease_verbs = {v for rule in role["rules"] if "leases" in rule["resources"] for v in rule["verbs"]}
    assert {"get", "create", "update"} <= lease_verbs
    assert _one(objects, "PodDisruptionBudget", "forge-controller")


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_the_api_has_a_service_an_hpa_a_pdb_and_routes(directory: str) -> None:
    objects = build(directory)
    _one(objects, "Deployment", "forge-api")
    _one(objects, "Service", "forge-api")
    hpa = _one(objects, "HorizontalPodAutoscaler", "forge-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "forge-api"
    _one(objects, "PodDisruptionBudget", "forge-api")
    routes = [o for o in objects if o["kind"] == "HTTPRoute"]
    paths = {m["path"]["value"] for r in routes for rule in r["spec"]["rules"] for m in rule["matches"]}
    assert {"/v1", "/v1/webhooks/github", "/healthz"} <= paths
    assert all(b["name"] == "forge-api" for r in routes for rule in r["spec"]["rules"] for b in rule["backendRefs"])
    certificate = _one(objects, "Certificate", "forge-tls")
    assert {h for r in routes for h in r["spec"]["hostnames"]} == set(certificate["spec"]["dnsNames"])


def _stream_of(job_type: JobType) -> str:
    subject = job_subject(job_type, "x")
    (stream,) = [s.name for s in STREAMS if any(subject.startswith(p.removesuffix(">")) for p in s.subjects)]
    return stream


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_every_job_type_has_a_worker_statefulset_scaled_on_its_consumer_lag(directory: str) -> None:
    objects = build(directory)
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    for job_type in HANDLERS:
        worker = _one(objects, "StatefulSet", f"forge-worker-{job_type.value}")
        ((_, container),) = containers(worker)
        assert container["command"] == ["forge-worker", job_type.value]
        (claim,) = worker["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "git-cache"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FORGE_GIT__CACHE_DIR"].startswith(mounts["git-cache"] + "/")
        (trigger,) = scaled[worker["metadata"]["name"]]["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        assert trigger["metadata"]["stream"] == _stream_of(job_type)
        assert trigger["metadata"]["consumer"] == consumer_name(job_type)
        assert scaled[worker["metadata"]["name"]]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_the_cmp_is_a_repo_server_sidecar_with_the_plugin_of_the_repository(directory: str) -> None:
    objects = build(directory)
    repo_server = _one(objects, "Deployment", "argocd-repo-server")
    assert repo_server["metadata"]["namespace"] == "argocd"
    assert "ServerSideApply=true" in repo_server["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    ((_, sidecar),) = containers(repo_server)
    assert sidecar["command"] == ["/var/run/argocd/argocd-cmp-server"]
    assert sidecar["securityContext"]["runAsUser"] == 999
    config = _one(objects, "ConfigMap", "forge-cmp-plugin")
    assert config["data"]["plugin.yaml"] == (ROOT / "cmp-plugin" / "plugin.yaml").read_text(encoding="utf-8")
    mount = {m["name"]: m for m in sidecar["volumeMounts"]}["forge-cmp-plugin"]
    assert mount["mountPath"] == "/home/argocd/cmp-server/config/plugin.yaml"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["FORGE_REGISTRY__URL"] == _one(objects, "ConfigMap", "forge-config")["data"]["FORGE_REGISTRY__URL"]
    # each render's JSON line goes to the container log (docs/cmp.md), and Alloy collects that container
    assert env["FORGE_CMP_LOG"] == "/proc/1/fd/1"
    alloy = (PLATFORM / "components" / "monitoring" / "config.alloy").read_text(encoding="utf-8")
    assert f'regex         = "{sidecar["name"]}"' in alloy
    assert 'names = ["argocd"]' in alloy


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_only_the_controller_gets_a_kubernetes_token(directory: str) -> None:
    objects = build(directory)
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert {n for n, a in accounts.items() if a.get("automountServiceAccountToken") is not False} == {
        "forge-controller"
    }
    for obj in objects:
        for pod, _ in containers(obj):
            account = pod.get("serviceAccountName")
            if account and account != "forge-controller":
                assert pod.get("automountServiceAccountToken") is False, obj["metadata"]["name"]


@pytest.mark.parametrize("directory", FORGE_BUILDS)
def test_the_namespace_is_in_the_ambient_mesh_and_every_workload_has_a_policy(directory: str) -> None:
    objects = build(directory)
    namespace = _one(objects, "Namespace", "forge")
    assert namespace["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = [o for o in objects if o["kind"] == "AuthorizationPolicy"]
    network = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in network), "default deny"
    for obj in objects:
        if obj["kind"] not in {"Deployment", "StatefulSet"} or obj["metadata"]["namespace"] != "forge":
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items()) for p in policies
        ), f"{obj['metadata']['name']} has no AuthorizationPolicy"


def _application(overlay: str, name: str) -> Obj:
    return _one(build(overlay), "Application", name)


@pytest.mark.parametrize("overlay", APP_OVERLAYS)
def test_the_services_the_platform_runs_on_are_configured_as_promised(overlay: str) -> None:
    nats = _application(overlay, "nats")["spec"]["source"]["helm"]["valuesObject"]["config"]
    assert nats["cluster"] == {"enabled": True, "replicas": 3}
    assert nats["jetstream"]["fileStore"]["enabled"] is True
    assert nats["monitor"]["port"] == 8222  # what the ScaledObjects read
    cluster = _one(build("components/postgres"), "Cluster", "forge-db")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
    defaults = _application(overlay, "argo-workflows")["spec"]["source"]["helm"]["valuesObject"]["controller"]
    spec = defaults["workflowDefaults"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "forge-step"
    assert spec["executor"]["serviceAccountName"] == "forge-executor"
    environments = {o["metadata"]["name"] for o in build("components/environments")}
    assert environments == {"forge-dev", "forge-staging", "forge-production"}
    names = {o["metadata"]["name"] for o in build(overlay) if o["kind"] == "Application"}
    assert {"nats", "cloudnative-pg", "forge-postgres", "minio", "harbor", "argo-workflows", "cert-manager"} <= names
    assert {"external-dns", "crossplane", "forge-environments", "keda", "external-secrets", "forge"} <= names


def test_the_plugin_copy_in_the_base_is_the_plugin() -> None:
    copy_ = PLATFORM / "forge" / "base" / "cmp-plugin.yaml"
    assert copy_.read_bytes() == (ROOT / "cmp-plugin" / "plugin.yaml").read_bytes()

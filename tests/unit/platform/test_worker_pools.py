"""Worker pools on Kubernetes (docs/deploy.md, "Worker pools"): forge/components/worker-pool adds one
pool's workers, forge/pools/<pool> names the pool, and every check of the forge overlays holds for
an overlay with pools (test_platform_manifests.py runs them on forge/overlays/prod-pool-example).

The pool's names come from the code: ``consumer_name`` (the durable consumer a worker of a pool
creates), ``pool_filter`` (the subjects it consumes), ``check_pool`` (what a pool may be called)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from forge.domain.messages import DEFAULT_POOL, JobType, check_pool
from forge.jobs.consumers import consumer_name
from forge.workflows.workers.registry import HANDLERS

from .checks import (
    PLATFORM,
    POOL_LABEL,
    Obj,
    build,
    build_at,
    floating_images,
    git_credential_problems,
    pod_selector,
    pool_drift,
    pool_of,
    pool_worker_problems,
    privileged_containers,
    referenced_secrets,
    schema_problems,
    secrets_in_git,
    selectors_across_pools,
    selects,
    services_without_pods,
    unbounded_containers,
    worker_pods,
)

POOLS = PLATFORM / "forge" / "pools"
COMPONENT = "../../components/worker-pool"
EXAMPLE = "forge/overlays/prod-pool-example"
# Namespace-wide plumbing that applies to every pool's workers by design: default deny, DNS, mTLS,
# and what lets the monitoring namespace scrape them (forge/base/observability.yaml).
SHARED = {
    "NetworkPolicy/default-deny",
    "NetworkPolicy/dns",
    "NetworkPolicy/forge-monitoring",
    "PeerAuthentication/forge",
    "Service/forge-workers-metrics",
}
JOB_TYPES = list(HANDLERS)
_PLACEHOLDER = re.compile(r"(?<![A-Z_])POOL(?![A-Z_])")


def _pool_literal(directory: Path) -> str:
    kustomization = YAML(typ="safe", pure=True).load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "forge-worker-pool"
    assert generator["options"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    assert kustomization["components"] == [COMPONENT]
    (literal,) = generator["literals"]
    key, _, pool = literal.partition("=")
    assert key == "pool"
    return str(pool)


@pytest.fixture(scope="module")
def two_pools_in_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Obj, ...]:
    """The documented way to add pools: the dev overlay (whose ScaledObjects scale to 0) with
    pools/example and a second pool, org-b (a hyphenated name), in its own resources."""
    root = tmp_path_factory.mktemp("platform") / "forge"
    shutil.copytree(PLATFORM / "forge", root)
    example = (root / "pools" / "example" / "kustomization.yaml").read_text(encoding="utf-8")
    (root / "pools" / "org-b").mkdir()
    (root / "pools" / "org-b" / "kustomization.yaml").write_text(
        example.replace("pool=example", "pool=org-b"), encoding="utf-8"
    )
    dev = root / "overlays" / "dev" / "kustomization.yaml"
    text = dev.read_text(encoding="utf-8")
    assert text.count("  - ../../base\n") == 1
    dev.write_text(
        text.replace("  - ../../base\n", "  - ../../base\n  - ../../pools/example\n  - ../../pools/org-b\n"),
        encoding="utf-8",
    )
    return build_at(root / "overlays" / "dev")


def _builds(two_pools_in_dev: tuple[Obj, ...]) -> dict[str, tuple[Obj, ...]]:
    return {EXAMPLE: build(EXAMPLE), "dev + example + org-b": two_pools_in_dev}


def _served(objects: Sequence[Obj]) -> set[str]:
    return {str(pool_of(o)) for o in objects if o["kind"] == "StatefulSet"}


def test_every_pool_directory_names_one_valid_pool_and_includes_the_component() -> None:
    directories = sorted(d for d in POOLS.iterdir() if d.is_dir())
    assert "example" in [d.name for d in directories]
    for directory in directories:
        pool = _pool_literal(directory)
        assert check_pool(pool) == pool == directory.name
        assert pool != DEFAULT_POOL


def test_the_example_overlay_is_prod_plus_the_pool_and_nothing_of_prod_changes() -> None:
    prod = {(o["kind"], o["metadata"]["name"]): o for o in build("forge/overlays/prod")}
    example = {(o["kind"], o["metadata"]["name"]): o for o in build(EXAMPLE)}
    assert {k: example[k] for k in prod} == prod
    added = {k: o for k, o in example.items() if k not in prod}
    assert {pool_of(o) for o in added.values()} == {"example"}
    kinds = sorted(kind for kind, _ in added)
    per_type = ["ScaledObject", "Service", "StatefulSet"]
    assert kinds == sorted(
        [
            *per_type * len(JOB_TYPES),
            "AuthorizationPolicy",
            "ExternalSecret",
            "ExternalSecret",
            "ExternalSecret",
            "NetworkPolicy",
            "ServiceAccount",
        ]
    )
    # the default pool has no PodDisruptionBudget for its workers, so a pool has none either
    assert not any(o["kind"] == "PodDisruptionBudget" and pool_of(o) for o in example.values())


def test_pools_in_an_overlay_pass_every_check(two_pools_in_dev: tuple[Obj, ...]) -> None:
    objects = two_pools_in_dev
    assert _served(objects) == {DEFAULT_POOL, "example", "org-b"}
    assert schema_problems(objects) == []
    assert floating_images(objects) == []
    assert unbounded_containers(objects) == []
    assert privileged_containers(objects) == []
    assert services_without_pods(objects) == []
    assert secrets_in_git(objects) == []
    external = {o["spec"]["target"]["name"] for o in objects if o["kind"] == "ExternalSecret"}
    assert referenced_secrets(objects) - external == {"forge-db-app"}  # written by CloudNativePG
    assert not any(o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("forge-worker-pool") for o in objects)
    # the dev overlay scales its default pool to 0, and a pool scales to 0 (the controller creates its consumers)
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert {o["metadata"]["name"]: o["spec"]["minReplicaCount"] for o in scaled if pool_of(o) == DEFAULT_POOL} == {
        f"forge-worker-{t.value}": 0 for t in JOB_TYPES
    }
    assert {o["spec"]["minReplicaCount"] for o in scaled if pool_of(o) != DEFAULT_POOL} == {0}
    assert len(scaled) == 3 * len(JOB_TYPES)


@pytest.mark.parametrize("which", [EXAMPLE, "dev + example + org-b"])
def test_each_pool_worker_is_its_pools_and_like_the_default_pools(
    which: str, two_pools_in_dev: tuple[Obj, ...]
) -> None:
    objects = _builds(two_pools_in_dev)[which]
    assert not _PLACEHOLDER.search(json.dumps(objects)), "a POOL placeholder is left"
    assert pool_worker_problems(objects, JOB_TYPES) == []
    assert git_credential_problems(objects) == []
    assert selectors_across_pools(objects, SHARED) == []
    assert pool_drift(objects) == []
    for pool in _served(objects) - {DEFAULT_POOL}:
        for job_type in JOB_TYPES:
            (scaled,) = [
                o
                for o in objects
                if o["metadata"]["name"] == f"forge-worker-{job_type.value}-{pool}" and o["kind"] == "ScaledObject"
            ]
            assert scaled["spec"]["triggers"][0]["metadata"]["consumer"] == consumer_name(job_type, pool)
        secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ExternalSecret" and pool_of(o) == pool}
        assert sorted(secrets) == [
            f"forge-git-credentials-{pool}",
            f"forge-nats-worker-{pool}",
            f"forge-step-secrets-{pool}",
        ]
        assert secrets[f"forge-git-credentials-{pool}"]["spec"]["dataFrom"] == [
            {"extract": {"key": f"forge/git/{pool}"}}
        ]
        assert secrets[f"forge-step-secrets-{pool}"]["spec"]["dataFrom"] == [
            {"extract": {"key": f"forge/step-secrets/{pool}"}}
        ]
        (login,) = secrets[f"forge-nats-worker-{pool}"]["spec"]["data"]
        assert login["remoteRef"] == {"key": f"forge/nats/workers/{pool}", "property": "password"}


def test_the_default_pools_worker_policies_do_not_select_a_pools_pods() -> None:
    objects = build(EXAMPLE)
    pool_pods = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] == "StatefulSet" and pool_of(o) == "example"
    ]
    default_pods = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] == "StatefulSet" and pool_of(o) == DEFAULT_POOL
    ]
    assert len(pool_pods) == len(default_pods) == len(JOB_TYPES)
    for kind in ("NetworkPolicy", "AuthorizationPolicy"):
        (default,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == "forge-workers"]
        (pool,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == "forge-workers-example"]
        assert all(selects(pod_selector(default), labels) for labels in default_pods)
        assert not any(selects(pod_selector(default), labels) for labels in pool_pods)
        assert all(selects(pod_selector(pool), labels) for labels in pool_pods)
        assert not any(selects(pod_selector(pool), labels) for labels in default_pods)


# The pool checks fail on what they exist to catch.


def _mutated(change: Any) -> list[Obj]:
    objects = [copy.deepcopy(o) for o in build(EXAMPLE)]
    change(objects)
    return objects


def _find(objects: list[Any], kind: str, name: str) -> Any:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(objects: list[Any], name: str) -> Any:
    return _find(objects, "StatefulSet", name)["spec"]["template"]["spec"]["containers"][0]


def _set_env(name: str, value: str) -> Any:
    def change(objects: list[Any]) -> None:
        env = _container(objects, "forge-worker-ci-example")["env"]
        (entry,) = [e for e in env if e["name"] == name]
        entry["value"] = value

    return change


def test_the_pool_checks_catch_a_wrong_pool_consumer_account_secret_or_node() -> None:
    def problems(change: Any) -> list[str]:
        return pool_worker_problems(_mutated(change), JOB_TYPES)

    assert "FORGE_WORKER__POOL is 'default'" in problems(_set_env("FORGE_WORKER__POOL", DEFAULT_POOL))[0]

    def bad_label(objects: list[Any]) -> None:
        _find(objects, "StatefulSet", "forge-worker-ci-example")["spec"]["template"]["metadata"]["labels"][
            POOL_LABEL
        ] = "Org_B"

    assert "is not a pool name" in problems(bad_label)[0]

    def default_consumer(objects: list[Any]) -> None:
        scaled = _find(objects, "ScaledObject", "forge-worker-ci-example")
        scaled["spec"]["triggers"][0]["metadata"]["consumer"] = consumer_name(JobType.CI)

    assert problems(default_consumer) == [
        "ScaledObject/forge-worker-ci-example: consumer 'ci-consumer', the workers consume 'ci-example-consumer'"
    ]

    def asleep(objects: list[Any]) -> None:
        scaled = _find(objects, "ScaledObject", "forge-worker-artifact-example")
        scaled["spec"]["triggers"][0]["metadata"]["activationLagThreshold"] = "3"

    (asleep_problem,) = problems(asleep)
    assert asleep_problem == (
        "ScaledObject/forge-worker-artifact-example: scales to 0 but one queued job does not wake it "
        "(activationLagThreshold)"
    )

    def wrong_stream(objects: list[Any]) -> None:
        _find(objects, "ScaledObject", "forge-worker-ci-example")["spec"]["triggers"][0]["metadata"]["stream"] = (
            "pipeline-artifacts"
        )

    assert "the jobs are on ['pipeline-tasks']" in problems(wrong_stream)[0]

    def default_account(objects: list[Any]) -> None:
        _find(objects, "StatefulSet", "forge-worker-ci-example")["spec"]["template"]["spec"]["serviceAccountName"] = (
            "forge-worker"
        )

    assert "service account 'forge-worker' is the default pool's" in problems(default_account)[0]

    def default_secrets(objects: list[Any]) -> None:
        volumes = _find(objects, "StatefulSet", "forge-worker-artifact-example")["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if v["name"] == "step-secrets"]
        volume["secret"]["secretName"] = "forge-step-secrets"

    assert "step secrets 'forge-step-secrets'" in problems(default_secrets)[0]

    def same_store_key(objects: list[Any]) -> None:
        _find(objects, "ExternalSecret", "forge-step-secrets-example")["spec"]["dataFrom"][0]["extract"]["key"] = (
            "forge/step-secrets"
        )

    assert len(problems(same_store_key)) == 2  # the ci and the artifact worker

    def anywhere(objects: list[Any]) -> None:
        del _find(objects, "StatefulSet", "forge-worker-discovery-example")["spec"]["template"]["spec"]["nodeSelector"]

    assert "not on the pool's nodes" in problems(anywhere)[0]

    def no_release(objects: list[Any]) -> None:
        objects.remove(_find(objects, "StatefulSet", "forge-worker-release-example"))

    assert problems(no_release) == ["pool example: no worker for ['release'] (their jobs would stay queued)"]


def test_every_worker_gets_its_pools_git_credentials_and_the_checks_catch_another_pools() -> None:
    objects = _mutated(lambda objects: None)
    assert git_credential_problems(objects) == []
    defaults = [w for w, labels in worker_pods(objects) if labels.get(POOL_LABEL) == DEFAULT_POOL]
    assert len(defaults) == len(JOB_TYPES)
    default_secret = _find(objects, "ExternalSecret", "forge-git-credentials")
    assert default_secret["spec"]["dataFrom"] == [{"extract": {"key": "forge/git"}}]

    def default_credentials(objects: list[Any]) -> None:
        worker = _find(objects, "StatefulSet", "forge-worker-discovery-example")
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        container["envFrom"][3]["secretRef"]["name"] = "forge-git-credentials"

    (problem,) = git_credential_problems(_mutated(default_credentials))
    assert problem.startswith("StatefulSet/forge-worker-discovery-example: git credentials [('forge-git-credentials'")

    def required(objects: list[Any]) -> None:
        worker = _find(objects, "StatefulSet", "forge-worker-ci-example")
        (volume,) = [v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "git-credentials"]
        volume["secret"]["optional"] = False

    assert len(git_credential_problems(_mutated(required))) == 1

    def shared_store_key(objects: list[Any]) -> None:
        _find(objects, "ExternalSecret", "forge-git-credentials-example")["spec"]["dataFrom"][0]["extract"]["key"] = (
            "forge/git"
        )

    assert len(git_credential_problems(_mutated(shared_store_key))) == len(JOB_TYPES)


def test_the_pool_checks_catch_selectors_across_pools_and_drift() -> None:
    def pool_policy_on_every_worker(objects: list[Any]) -> None:
        del _find(objects, "NetworkPolicy", "forge-workers-example")["spec"]["podSelector"]["matchLabels"][POOL_LABEL]

    assert selectors_across_pools(_mutated(pool_policy_on_every_worker), SHARED) == [
        "NetworkPolicy/forge-workers-example: of the pool example, applies to the workers of ['default', 'example']"
    ]

    def default_policy_on_every_worker(objects: list[Any]) -> None:
        del _find(objects, "AuthorizationPolicy", "forge-workers")["spec"]["selector"]["matchLabels"][POOL_LABEL]

    assert selectors_across_pools(_mutated(default_policy_on_every_worker), SHARED) == [
        "AuthorizationPolicy/forge-workers: applies to the workers of the pools ['default', 'example']"
    ]

    def unlabelled(objects: list[Any]) -> None:
        del _find(objects, "StatefulSet", "forge-worker-ci")["spec"]["template"]["metadata"]["labels"][POOL_LABEL]

    assert "StatefulSet/forge-worker-ci: its pods have no" in selectors_across_pools(_mutated(unlabelled), SHARED)[0]

    def bigger(objects: list[Any]) -> None:
        _container(objects, "forge-worker-ci-example")["resources"]["limits"]["memory"] = "64Gi"

    assert pool_drift(_mutated(bigger)) == [
        (
            "StatefulSet/forge-worker-ci-example: differs from StatefulSet/forge-worker-ci beyond the pool "
            "(.spec.template.spec.containers[0].resources.limits.memory: '64Gi' != '8Gi')"
        )
    ]

    def wider(objects: list[Any]) -> None:
        egress = _find(objects, "NetworkPolicy", "forge-workers-example")["spec"]["egress"]
        egress.append({"ports": [{"protocol": "TCP", "port": 5432}]})

    assert (
        "NetworkPolicy/forge-workers-example: differs from NetworkPolicy/forge-workers"
        in pool_drift(_mutated(wider))[0]
    )

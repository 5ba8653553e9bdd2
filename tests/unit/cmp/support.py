"""Builders shared by the CMP tests: a Release OCI pushed the way the release worker pushes it
(the same ``forge.releases`` functions, media types, annotations and tag), and a GitOps tree."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forge.ports.registry import ArtifactRegistry, Layer, sha256_digest
from forge.releases import ReleaseMetadata, pack_resources, summarize_resources, tracking_tag
from forge.releases.media_types import LAYER_TYPE_ANNOTATION, RELEASE_ARTIFACT_TYPE, RELEASE_METADATA, RESOURCES
from forge.releases.naming import oci_repository

REPOSITORY = "acme/shop"
PROJECT = "web"
COMMIT = "4f1c3a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
ENV = "dev"
IMAGE = "registry.forge.local/acme/shop/web/api@sha256:" + "a1" * 32


def sample_objects() -> list[dict[str, Any]]:
    """Objects as the release worker renders them: artifact values resolved, env expressions kept."""
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "${{ env.tier }}"}},
            "spec": {
                "replicas": "${{ env.replicas }}",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "api",
                                "image": IMAGE,
                                "env": [
                                    {"name": "URL", "value": "https://${{ env.host }}:${{ env.port }}/v1"},
                                    {"name": "TEMPLATE", "value": "$${{ not.an.expression }}"},
                                ],
                                "resources": "${{ env.resources }}",
                            }
                        ]
                    },
                },
            },
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": "${{ env.ports }}"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-flags"}, "data": {"yes": "yes"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a-settings"}, "data": {"level": "info"}},
    ]


ENV_DATA: dict[str, Any] = {
    "tier": "backend",
    "replicas": 1,
    "host": "dev.example.com",
    "port": 8443,
    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    "ports": [{"port": 80}],
}
PROJECT_DATA: dict[str, Any] = {
    "replicas": 3,
    "resources": {"limits": {"memory": "512Mi", "cpu": None}},
    "ports": [{"port": 443}, {"port": 8443}],
}


def release_layers(
    objects: Sequence[Mapping[str, Any]],
    *,
    repository: str = REPOSITORY,
    project: str = PROJECT,
    commit: str = COMMIT,
    packed: bytes | None = None,
) -> list[Layer]:
    """The two layers of a Release OCI, as ``workflows/.../workers/releases.py`` builds them."""
    packed = pack_resources(objects) if packed is None else packed
    metadata = ReleaseMetadata(
        repository=repository,
        project=project,
        commit_sha=commit,
        trigger="branch",
        branch="main",
        created_by="test",
        resources=summarize_resources(objects),
        resources_digest=sha256_digest(packed),
    )
    return [
        Layer(RELEASE_METADATA, metadata.to_bytes(), {LAYER_TYPE_ANNOTATION: "metadata"}),
        Layer(RESOURCES, packed, {LAYER_TYPE_ANNOTATION: "resources"}),
    ]


async def push_release(
    registry: ArtifactRegistry,
    layers: Sequence[Layer],
    *,
    repository: str = REPOSITORY,
    project: str = PROJECT,
    commit: str = COMMIT,
    artifact_type: str = RELEASE_ARTIFACT_TYPE,
) -> str:
    """Push like the release worker: ``<owner>/<repo>/<project>``, tag ``sha-<commit>``; the digest."""
    return await registry.push_artifact(
        oci_repository(repository, project),
        artifact_type=artifact_type,
        layers=layers,
        annotations={"org.opencontainers.image.revision": commit, "org.opencontainers.image.source": repository},
        tags=[tracking_tag(commit)],
    )


def pointer_document(
    digest: str, *, repository: str = REPOSITORY, project: str = PROJECT, commit: str = COMMIT
) -> dict[str, Any]:
    return {
        "apiVersion": "forge.projectcatalyst.io/v1alpha1",
        "kind": "ReleasePointer",
        "metadata": {"name": project, "annotations": {"forge.projectcatalyst.io/release-number": "7"}},
        "spec": {"repository": repository, "project": project, "release": commit, "digest": digest},
    }


def environment_config(name: str, data: Mapping[str, Any] | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "apiextensions.crossplane.io/v1beta1",
        "kind": "EnvironmentConfig",
        "metadata": {"name": name},
    }
    if data is not None:
        document["data"] = dict(data)
    return document


def to_yaml(document: Any) -> str:
    """Block-style YAML (ruamel), so the tests exercise the YAML path, not only JSON."""
    import io

    from ruamel.yaml import YAML

    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(document, out)
    return out.getvalue()


def write_gitops(
    root: Path,
    digest: str,
    *,
    env: str = ENV,
    env_data: Mapping[str, Any] | None = None,
    project_data: Mapping[str, Any] | None = None,
    pointer: Any = None,
    repository: str = REPOSITORY,
    project: str = PROJECT,
) -> Path:
    """``<root>/<env>/env.yaml``, ``<root>/<env>/apps/<owner>/<repo>/<project>/release.yaml`` (+ env.yaml);
    the app directory."""
    app = root / env / "apps" / repository / project
    app.mkdir(parents=True, exist_ok=True)
    (root / env / "env.yaml").write_text(to_yaml(environment_config(env, ENV_DATA if env_data is None else env_data)))
    document = pointer_document(digest, repository=repository, project=project) if pointer is None else pointer
    (app / "release.yaml").write_text(document if isinstance(document, str) else to_yaml(document))
    if project_data is not None:
        (app / "env.yaml").write_text(json.dumps(environment_config(f"{project}-{env}", project_data), indent=2))
    return app


def argocd_environ(app: Path, root: Path, **extra: str) -> dict[str, str]:
    return {
        "ARGOCD_APP_NAME": "-".join(app.parts[-3:]),
        "ARGOCD_APP_SOURCE_PATH": app.relative_to(root).as_posix(),
        **extra,
    }

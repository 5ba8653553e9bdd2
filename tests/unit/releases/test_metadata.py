from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from forge.errors import InvalidInputError
from forge.releases import (
    ArtifactMetadata,
    Publication,
    ReleaseArtifact,
    ReleaseMetadata,
    ResourceEntry,
    SourceInfo,
    summarize_resources,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def artifact(name: str) -> ReleaseArtifact:
    return ReleaseArtifact(
        name=name,
        type="container",
        ref=f"registry.local/acme/shop/api/{name}@{D1}",
        digest=D1,
        tracking_ref=f"registry.local/acme/shop/api/{name}@{D2}",
        tracking_digest=D2,
    )


def release(**changes: object) -> ReleaseMetadata:
    values: dict[str, object] = {
        "repository": "acme/shop",
        "project": "api",
        "commit_sha": SHA,
        "trigger": "branch",
        "branch": "main",
        "created_by": "forge-controller",
        "source": SourceInfo(
            author="Ada <ada@example.org>", message="Ship it", committed_at=datetime(2025, 1, 2, tzinfo=UTC)
        ),
        "artifacts": [artifact("worker"), artifact("server")],
        "resources": [
            ResourceEntry(api_version="v1", kind="Service", namespace="shop", name="api"),
            ResourceEntry(api_version="apps/v1", kind="Deployment", name="api"),
        ],
        "resources_digest": D3,
    }
    values.update(changes)
    return ReleaseMetadata.model_validate(values)


def test_release_metadata_is_canonical_json() -> None:
    data = release().to_bytes()
    assert (
        data
        == release(
            artifacts=[artifact("server"), artifact("worker")], resources=list(reversed(release().resources))
        ).to_bytes()
    )
    assert b" " not in data.replace(b"Ship it", b"").replace(b"Ada <", b"")
    decoded = json.loads(data)
    assert list(decoded) == sorted(decoded)
    assert decoded["schema_version"] == 1
    assert [a["name"] for a in decoded["artifacts"]] == ["server", "worker"]
    assert decoded["resources"][0] == {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": None, "name": "api"}
    assert decoded["source"]["committed_at"] == "2025-01-02T00:00:00Z"
    assert "number" not in decoded


def test_release_metadata_round_trips() -> None:
    original = release()
    assert ReleaseMetadata.from_bytes(original.to_bytes()) == original


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "ReleaseMetadata: (document): Invalid JSON: expected ident at line 1 column 2"),
        (b"[]", "ReleaseMetadata: (document): Input should be an object"),
        (
            release().to_bytes().replace(b'"schema_version":1', b'"schema_version":2'),
            "ReleaseMetadata: schema_version: Input should be 1",
        ),
        (
            release().to_bytes().replace(SHA.encode(), b"abc"),
            "ReleaseMetadata: commit_sha: String should match pattern '^[0-9a-f]{40}$'",
        ),
        (
            release().to_bytes().replace(b'"branch":"main"', b'"branch":"main","number":3'),
            "ReleaseMetadata: number: Extra inputs are not permitted",
        ),
    ],
)
def test_release_metadata_from_bytes_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        ReleaseMetadata.from_bytes(data)
    assert str(caught.value) == message


def test_release_metadata_refuses_duplicate_artifacts_and_oversized_input() -> None:
    with pytest.raises(ValueError, match="artifact names must be unique"):
        release(artifacts=[artifact("server"), artifact("server")])
    with pytest.raises(InvalidInputError) as caught:
        ReleaseMetadata.from_bytes(b"{" + b" " * 100 + b"}", max_bytes=64)
    assert str(caught.value) == "ReleaseMetadata: 102 bytes, over the limit of 64"


def test_artifact_metadata_round_trips_canonically() -> None:
    meta = ArtifactMetadata(
        repository="acme/shop",
        project="api",
        artifact="server",
        type="container",
        commit_sha=SHA,
        ref=f"registry.local/acme/shop/api/server@{D1}",
        digest=D1,
        publishers=[
            Publication(publisher="s3", type="s3", location="https://s3.local/artifacts/server.tar"),
            Publication(publisher="harbor", type="oci", location=f"registry.local/acme/shop/api/server@{D1}"),
        ],
    )
    data = meta.to_bytes()
    assert ArtifactMetadata.from_bytes(data) == meta
    assert [p["publisher"] for p in json.loads(data)["publishers"]] == ["harbor", "s3"]
    with pytest.raises(InvalidInputError) as caught:
        ArtifactMetadata.from_bytes(data.replace(b'"container"', b'"helm"'))
    assert str(caught.value) == "ArtifactMetadata: type: Input should be 'container', 'binary' or 'archive'"


def test_summarize_resources() -> None:
    objects = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}},
    ]
    assert summarize_resources(objects) == [
        ResourceEntry(api_version="v1", kind="Service", namespace="shop", name="api"),
        ResourceEntry(api_version="apps/v1", kind="Deployment", namespace=None, name="api"),
    ]

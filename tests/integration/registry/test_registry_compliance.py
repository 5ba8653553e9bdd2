"""ArtifactRegistry compliance suite: the contract of ``forge.ports.registry``, run against every adapter."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from forge.errors import InvalidInputError, LimitExceededError, NotFoundError
from forge.ports.registry import EMPTY_CONFIG_MEDIA_TYPE, IMAGE_MANIFEST, ArtifactRegistry, Layer
from forge.testing.oci import write_image_layout

RELEASE = "application/vnd.forge.release.v1"
METADATA = "application/vnd.forge.release.metadata.v1+json"
RESOURCES = "application/vnd.forge.resources.v1.tar+gzip"
LAYERS = [
    Layer(METADATA, b'{"project":"api","number":1}', {"org.opencontainers.image.title": "release.json"}),
    Layer(RESOURCES, bytes(range(256)) * 40),
]
ANNOTATIONS = {"org.opencontainers.image.revision": "a" * 40, "forge.release.number": "1"}


async def _push(registry: ArtifactRegistry, repository: str, *, tags: tuple[str, ...] = ("sha-" + "a" * 40,)) -> str:
    return await registry.push_artifact(
        repository, artifact_type=RELEASE, layers=LAYERS, annotations=ANNOTATIONS, tags=tags
    )


async def test_pushed_artifact_reads_back_by_digest_and_by_tag(registry: ArtifactRegistry, repository: str) -> None:
    digest = await _push(registry, repository, tags=("sha-" + "a" * 40, "1"))

    by_digest = await registry.manifest(repository, digest)
    by_tag = await registry.manifest(repository, "1")
    assert by_digest == by_tag
    assert by_digest.digest == digest
    assert by_digest.media_type == IMAGE_MANIFEST
    assert by_digest.artifact_type == RELEASE
    assert by_digest.content["annotations"] == ANNOTATIONS
    assert by_digest.content["config"] == {
        "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
        "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        "size": 2,
    }
    canonical = json.dumps(by_digest.content, sort_keys=True, separators=(",", ":")).encode()
    assert by_digest.size == len(canonical)
    assert digest == "sha256:" + hashlib.sha256(canonical).hexdigest()


async def test_layers_keep_order_media_types_annotations_and_bytes(registry: ArtifactRegistry, repository: str) -> None:
    digest = await _push(registry, repository)
    layers = (await registry.manifest(repository, digest)).content["layers"]

    assert [layer["mediaType"] for layer in layers] == [METADATA, RESOURCES]
    assert layers[0]["annotations"] == {"org.opencontainers.image.title": "release.json"}
    assert "annotations" not in layers[1]
    for sent, described in zip(LAYERS, layers, strict=True):
        assert described["size"] == len(sent.data)
        assert await registry.blob(repository, described["digest"], max_bytes=len(sent.data)) == sent.data


async def test_a_second_push_gives_the_same_digest_and_other_inputs_another(
    registry: ArtifactRegistry, repository: str
) -> None:
    first = await _push(registry, repository)
    assert await _push(registry, repository) == first
    again = await asyncio.gather(*(_push(registry, repository) for _ in range(3)))
    assert set(again) == {first}

    other = await registry.push_artifact(
        repository, artifact_type=RELEASE, layers=LAYERS, annotations={**ANNOTATIONS, "forge.release.number": "2"}
    )
    assert other != first
    assert (await registry.manifest(repository, first)).content["annotations"] == ANNOTATIONS


async def test_tags_are_listed_sorted_and_tag_is_idempotent(registry: ArtifactRegistry, repository: str) -> None:
    digest = await _push(registry, repository, tags=("sha-" + "b" * 40, "2"))
    await registry.tag(repository, digest, "main-7")
    await registry.tag(repository, digest, "main-7")

    assert await registry.tags(repository) == sorted(["sha-" + "b" * 40, "2", "main-7"])
    assert (await registry.manifest(repository, "main-7")).digest == digest


async def test_tag_moves_to_another_manifest(registry: ArtifactRegistry, repository: str) -> None:
    first = await _push(registry, repository, tags=("latest",))
    second = await registry.push_artifact(repository, artifact_type=RELEASE, layers=LAYERS[:1], annotations={})
    await registry.tag(repository, second, "latest")

    assert (await registry.manifest(repository, "latest")).digest == second
    assert (await registry.manifest(repository, first)).digest == first


async def test_push_layout_pushes_the_image_unchanged(
    registry: ArtifactRegistry, repository: str, tmp_path: Path
) -> None:
    expected = write_image_layout(tmp_path / "image", files={"app/bin": b"#!/bin/sh\necho hi\n"})

    digest = await registry.push_layout(repository, tmp_path / "image", tags=["v1"])

    assert digest == expected
    manifest = await registry.manifest(repository, "v1")
    assert manifest.digest == expected
    assert manifest.media_type == IMAGE_MANIFEST
    assert manifest.artifact_type is None
    stored = (tmp_path / "image" / "blobs" / "sha256" / expected.removeprefix("sha256:")).read_bytes()
    assert json.loads(stored) == manifest.content
    for described in [manifest.content["config"], *manifest.content["layers"]]:
        path = tmp_path / "image" / "blobs" / "sha256" / described["digest"].removeprefix("sha256:")
        assert await registry.blob(repository, described["digest"], max_bytes=1 << 20) == path.read_bytes()
    assert await registry.push_layout(repository, tmp_path / "image") == expected  # a retry is a no-op


async def test_push_layout_picks_the_manifest_by_ref_name(
    registry: ArtifactRegistry, repository: str, tmp_path: Path
) -> None:
    layout = tmp_path / "image"
    first = write_image_layout(layout, files={"a": b"1"}, ref_name="amd64")
    second_dir = tmp_path / "second"
    second = write_image_layout(second_dir, files={"b": b"2"}, ref_name="arm64")
    _merge_layouts(layout, second_dir)

    assert await registry.push_layout(repository, layout, ref_name="arm64") == second
    assert await registry.push_layout(repository, layout, ref_name="amd64") == first


def _merge_layouts(into: Path, other: Path) -> None:
    """One layout whose index names both images (and holds both images' blobs)."""
    for blob in (other / "blobs" / "sha256").iterdir():
        (into / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    index = json.loads((into / "index.json").read_text())
    index["manifests"] += json.loads((other / "index.json").read_text())["manifests"]
    (into / "index.json").write_text(json.dumps(index))


def _break_missing_oci_layout(layout: Path) -> str:
    (layout / "oci-layout").unlink()
    return "oci-layout"


def _break_no_manifest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    (layout / "index.json").write_text(json.dumps({**index, "manifests": []}))
    return "index.json"


def _break_two_manifests(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    twice = [index["manifests"][0], {**index["manifests"][0], "annotations": {}}]
    (layout / "index.json").write_text(json.dumps({**index, "manifests": twice}))
    return "index.json"


def _break_missing_blob(layout: Path) -> str:
    manifest = _manifest_of(layout)
    name: str = manifest["layers"][0]["digest"].removeprefix("sha256:")
    (layout / "blobs" / "sha256" / name).unlink()
    return name


def _break_digest(layout: Path) -> str:
    manifest = _manifest_of(layout)
    name: str = manifest["config"]["digest"].removeprefix("sha256:")
    path = layout / "blobs" / "sha256" / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # same size, other bytes
    path.write_bytes(bytes(data))
    return name


def _manifest_of(layout: Path) -> Any:
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text())


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (_break_missing_oci_layout, "missing"),
        (_break_no_manifest, "names 0 manifests"),
        (_break_two_manifests, "names 2 manifests"),
        (_break_missing_blob, "is missing"),
        (_break_digest, "content has digest"),
    ],
)
async def test_an_invalid_layout_is_refused_naming_the_file(
    registry: ArtifactRegistry, repository: str, tmp_path: Path, breakage: object, reason: str
) -> None:
    layout = tmp_path / "image"
    write_image_layout(layout, files={"a": b"1"})
    assert callable(breakage)
    file_name = breakage(layout)

    with pytest.raises(InvalidInputError) as caught:
        await registry.push_layout(repository, layout, tags=["v1"])

    assert file_name in str(caught.value)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(NotFoundError):  # nothing was pushed
        await registry.manifest(repository, "v1")


async def test_unknown_things_are_not_found(registry: ArtifactRegistry, repository: str) -> None:
    with pytest.raises(NotFoundError):
        await registry.tags(repository)
    digest = await _push(registry, repository)
    with pytest.raises(NotFoundError):
        await registry.manifest(repository, "no-such-tag")
    with pytest.raises(NotFoundError):
        await registry.manifest(repository, "sha256:" + "0" * 64)
    with pytest.raises(NotFoundError):
        await registry.blob(repository, "sha256:" + "0" * 64, max_bytes=10)
    with pytest.raises(NotFoundError):
        await registry.tag(repository, "sha256:" + "0" * 64, "x")
    with pytest.raises(NotFoundError):
        await registry.manifest(repository + "-other", digest)


async def test_a_blob_over_max_bytes_is_refused(registry: ArtifactRegistry, repository: str) -> None:
    digest = await _push(registry, repository)
    big = (await registry.manifest(repository, digest)).content["layers"][1]

    with pytest.raises(LimitExceededError):
        await registry.blob(repository, big["digest"], max_bytes=big["size"] - 1)
    assert len(await registry.blob(repository, big["digest"], max_bytes=big["size"])) == big["size"]


@pytest.mark.parametrize(
    ("repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/owner/repo", "v1", None),
        ("Owner/Repo", "v1", None),
        ("owner/../repo", "v1", None),
        ("owner/repo", "-bad", None),
        ("owner/repo", "v1/../x", None),
        ("owner/repo", "v1", "sha256:xyz"),
    ],
)
async def test_bad_names_are_invalid_input(
    registry: ArtifactRegistry, repository: str, tag: str, digest: str | None
) -> None:
    call: Coroutine[Any, Any, object]
    if digest is None:
        call = registry.push_artifact(repository, artifact_type=RELEASE, layers=LAYERS, annotations={}, tags=[tag])
    else:
        call = registry.tag(repository, digest, tag)
    with pytest.raises(InvalidInputError):
        await call


async def test_reference_names_host_repository_and_digest(registry: ArtifactRegistry, repository: str) -> None:
    digest = await _push(registry, repository)
    reference = registry.reference(repository, digest)
    host, _, rest = reference.partition("/")
    assert rest == f"{repository}@{digest}"
    assert ":" in host  # host:port of the registry, never a scheme
    assert "://" not in reference

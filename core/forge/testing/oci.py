"""A tiny real OCI image layout on disk, as ``docker buildx --output type=oci,tar=false`` writes one (tests only)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_image_layout"]

_REF_NAME = "org.opencontainers.image.ref.name"


def write_image_layout(directory: Path, *, files: Mapping[str, bytes], ref_name: str | None = "latest") -> str:
    """Write an image (config JSON + one tar.gz layer holding ``files``) as an image layout; its manifest digest.

    Deterministic: the same files give the same digests (sorted entries, mtime 0, gzip mtime 0).
    """
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer_tar = _tar(files)
    layer = _write(blobs, "application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(layer_tar, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }
    config_descriptor = _write(blobs, "application/vnd.oci.image.config.v1+json", _json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer],
    }
    manifest_descriptor = _write(blobs, "application/vnd.oci.image.manifest.v1+json", _json(manifest))
    if ref_name is not None:
        manifest_descriptor["annotations"] = {_REF_NAME: ref_name}
    (directory / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    (directory / "index.json").write_bytes(_json({**index, "manifests": [manifest_descriptor]}))
    return str(manifest_descriptor["digest"])


def _tar(files: Mapping[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _write(blobs: Path, media_type: str, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

"""Golden release layer: a sample project rendered and packed, listed entry by entry.

``tests/golden/releases/project.yaml`` is loaded the way discovery loads a project, rendered with
fixed artifact values and packed; the listing (tar headers, digest of the uncompressed tar, every
entry's bytes) is compared byte for byte with ``resources.txt``. The tar, not the gzip stream, is
digested: deflate output belongs to the zlib build, the tar only to our code. Set
``FORGE_UPDATE_GOLDEN=1`` to rewrite it after an intended change (never in CI), then review the diff.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zlib
from pathlib import Path

from forge.discovery.load import load_config
from forge.domain.config import ProjectConfig
from forge.releases import artifact_fields, pack_resources, render_resources, unpack_resources, unvalidated_resources

_HERE = Path(__file__).parent / "releases"
SHA = "4f1c3a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
REGISTRY = "registry.forge.local/acme/shop/shop"
VALUES = {
    "api": artifact_fields(f"{REGISTRY}/api", "sha256:" + "a1" * 32, SHA),
    "cli": artifact_fields(
        f"{REGISTRY}/cli", "sha256:" + "b2" * 32, SHA, url=f"https://s3.forge.local/artifacts/acme/shop/{SHA}/shop"
    ),
}


def _check_golden(name: str, text: str) -> None:
    path = _HERE / name
    if os.environ.get("FORGE_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; run with FORGE_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path} differs; run with FORGE_UPDATE_GOLDEN=1 and review the diff"
    )


def _listing(layer: bytes) -> str:
    tar = zlib.decompress(layer, 16 + zlib.MAX_WBITS)
    lines = [f"# {len(tar)} bytes of tar, sha256:{hashlib.sha256(tar).hexdigest()}"]
    bodies: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        for member in archive.getmembers():
            mode = stat.filemode(stat.S_IFREG | member.mode)
            owner = f"{member.uid}/{member.gid} {member.uname!r}/{member.gname!r}"
            lines.append(f"{mode} {owner} mtime={member.mtime} {member.size:5d} {member.name}")
            handle = archive.extractfile(member)
            assert handle is not None
            bodies.append(f"--- {member.name}\n{handle.read().decode('utf-8')}")
    return "\n".join(lines) + "\n" + "".join(bodies)


def test_sample_project_renders_and_packs_to_the_golden_listing() -> None:
    loaded = load_config((_HERE / "project.yaml").read_bytes(), ProjectConfig)
    assert loaded.config is not None, loaded.issues
    assert loaded.config.deploy is not None
    objects = render_resources(loaded.config.deploy.resources, VALUES)
    assert unvalidated_resources(objects) == ["argoproj.io/v1alpha1 Rollout shop-api"]
    layer = pack_resources(objects)
    assert pack_resources(list(reversed(objects))) == layer
    assert len(unpack_resources(layer)) == len(objects)
    _check_golden("resources.txt", _listing(layer))

"""Build the hello service's container image as an OCI image layout, without a container engine.

What `docker buildx build --output type=oci,tar=false,dest=dist/image` or Earthly's SAVE IMAGE would
leave behind: `oci-layout`, `index.json` and content-addressed blobs. The image has one layer with the
bundled app (from the build phase) and runs it with python3. Deterministic: the same sources give the
same digest.
"""

import gzip
import hashlib
import io
import json
import pathlib
import shutil
import sys
import tarfile

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "dist/image")
sources = {"app/hello.py": pathlib.Path("main.py").read_bytes()}


def blob(data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (out / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def layer() -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(sources.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


shutil.rmtree(out, ignore_errors=True)
(out / "blobs" / "sha256").mkdir(parents=True)
(out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
compressed, diff_id = layer()
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["python3", "/app/hello.py"]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json"),
    "layers": [blob(compressed, "application/vnd.oci.image.layer.v1.tar+gzip")],
}
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [blob(json.dumps(manifest, sort_keys=True).encode(), manifest["mediaType"])],
}
(out / "index.json").write_text(json.dumps(index, sort_keys=True))
print(f"wrote {out}: {index['manifests'][0]['digest']}")

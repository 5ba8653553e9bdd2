"""``forge-cmp generate``: the app directory of a GitOps repository → the manifests to apply.

Inputs, as Argo CD gives them to a sidecar plugin: the working directory is the app directory
``<env>/apps/<owner>/<repo>/<project>``; ``ARGOCD_APP_SOURCE_PATH`` is that directory relative to
the GitOps root (its first segment is the environment, the root is the working directory minus
it); ``ARGOCD_APP_NAME`` names the app in messages. Files read: ``release.yaml`` (the pointer),
``<root>/<env>/env.yaml`` (required) and ``./env.yaml`` (optional), each at most 1 MiB.

The whole output is built in memory and returned; nothing is printed here, so an error can never
leave half a stream on stdout (``__main__`` prints it all or nothing).

Render memo: a render is a pure function of the three files' bytes, the environment's name and
this code; every Release OCI is immutable by digest. So after a successful render the output is
stored under ``<cache>/renders/<sha256 of those inputs>`` (with its own sha256, verified on read),
and the same inputs print it again without parsing YAML, reading the release or importing
pydantic. This is the common case: with polling, every commit to the GitOps repository makes
Argo CD call every plugin app again with mostly unchanged inputs. The code's part of the key is
the size and mtime of every module of ``forge.cmp`` and ``forge.releases``.

Objects cache: the resources layer's objects, once read (gzip, tar, limits, YAML), are stored as
JSON under ``<cache>/objects/<sha256 of the layer's sha256 and the code>`` (sha256-checked on read
like the memo), so a render of a cached release with new values (the "warm" case) neither imports
tarfile nor reads the archive again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge.cmp.release import ReleaseCache, write_atomic
from forge.errors import InvalidInputError, LimitExceededError

if TYPE_CHECKING:
    from forge.cmp.pointer import ReleasePointer
    from forge.ports.registry import ArtifactReader

__all__ = ["MAX_FILE_BYTES", "Context", "generate"]

MAX_FILE_BYTES = 1_048_576
_MEMO_VERSION = b"forge-cmp render 1\n"
_OBJECTS_VERSION = b"forge-cmp objects 1\n"


class Context:
    """What is known so far, for the one-line error: filled in as ``generate`` learns it."""

    __slots__ = ("app", "environment", "pointer", "source")

    def __init__(self) -> None:
        self.app = "?"
        self.environment = "?"
        self.pointer: ReleasePointer | None = None
        self.source = "?"  # memo (the same inputs again), cache (the release by digest) or registry

    def describe(self) -> str:
        release = "?" if self.pointer is None else f"{self.pointer.describe()} {self.pointer.digest[:19]}"
        return f"app {self.app} (environment {self.environment}, release {release})"


def generate(
    app_dir: Path,
    environ: Mapping[str, str],
    context: Context,
    *,
    cache: ReleaseCache | None,
    open_registry: Callable[[], ArtifactReader],
) -> bytes:
    """The YAML stream for the app in ``app_dir``; a ForgeError (one line) on any doubt."""
    context.app = environ.get("ARGOCD_APP_NAME") or app_dir.name
    segments = _source_path(environ)
    context.environment = segments[0]
    root = _gitops_root(app_dir, segments)
    pointer_bytes = _read(app_dir / "release.yaml", "release.yaml", required=True)
    env_path = root / segments[0] / "env.yaml"
    env_bytes = _read(env_path, f"{segments[0]}/env.yaml", required=True)
    project_bytes = _read(app_dir / "env.yaml", "env.yaml (the project's)", required=False)
    assert pointer_bytes is not None
    assert env_bytes is not None

    fingerprint = _code_fingerprint()
    memo_key = _memo_key(fingerprint, segments, pointer_bytes, env_bytes, project_bytes)
    if cache is not None and (memoized := _stored(cache, "renders", memo_key)) is not None:
        context.source = "memo"
        return memoized
    # Imported past the memo: a replayed render needs none of them (module docstring).
    from forge.cmp.documents import load_documents
    from forge.cmp.pointer import parse_pointer
    from forge.cmp.release import load_release
    from forge.cmp.render import emit, render_objects
    from forge.cmp.values import config_data, merge_values

    pointer = parse_pointer(_one_document(pointer_bytes, "release.yaml"))
    context.pointer = pointer
    _check_path(pointer, segments)
    env_data = config_data(load_documents(env_bytes, f"{segments[0]}/env.yaml"), f"{segments[0]}/env.yaml", named=False)
    project_doc: dict[str, Any] | None = None
    project_data: dict[str, Any] = {}
    if project_bytes is not None:
        documents = load_documents(project_bytes, "env.yaml")
        project_data = config_data(documents, "env.yaml", named=True)
        project_doc = documents[0]

    release = load_release(pointer, cache, open_registry)
    objects = render_objects(
        _release_objects(release.resources, cache, fingerprint), merge_values(env_data, project_data)
    )
    output = emit([*objects, *([project_doc] if project_doc is not None else [])])
    if cache is not None:
        _store(cache, "renders", memo_key, output)
    return output


def _release_objects(resources: bytes, cache: ReleaseCache | None, fingerprint: bytes) -> list[dict[str, Any]]:
    """The objects of the resources layer: read once (tar, limits, YAML) and kept as JSON under ``objects/``,
    keyed by the layer's sha256 and this code, so a render of a cached release imports no tarfile."""
    digest = hashlib.sha256(_OBJECTS_VERSION)
    digest.update(fingerprint)
    digest.update(hashlib.sha256(resources).digest())
    key = digest.hexdigest()
    stored = _stored(cache, "objects", key) if cache is not None else None
    if stored is not None:
        objects = json.loads(stored)
        if isinstance(objects, list) and objects and all(isinstance(obj, dict) for obj in objects):
            return objects
    from forge.cmp.extract import read_objects

    objects = read_objects(resources)
    if cache is not None:
        _store(cache, "objects", key, json.dumps(objects, ensure_ascii=False, separators=(",", ":")).encode())
    return objects


def _source_path(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("ARGOCD_APP_SOURCE_PATH", "")
    segments = [s for s in raw.strip("/").split("/") if s not in ("", ".")]
    if len(segments) != 5 or segments[1] != "apps" or ".." in segments:
        raise InvalidInputError(
            f"ARGOCD_APP_SOURCE_PATH {raw!r}: expected <env>/apps/<owner>/<repo>/<project> (the app directory)"
        )
    return segments


def _gitops_root(app_dir: Path, segments: list[str]) -> Path:
    tail = list(app_dir.parts[-len(segments) :])
    if tail != segments:
        raise InvalidInputError(
            f"the working directory {app_dir} does not end with ARGOCD_APP_SOURCE_PATH {'/'.join(segments)}"
        )
    return app_dir.parents[len(segments) - 1]


def _check_path(pointer: ReleasePointer, segments: list[str]) -> None:
    owner, repo, project = segments[2:]
    if f"{owner}/{repo}".lower() != pointer.repository.lower() or project != pointer.project:
        raise InvalidInputError(
            f"release.yaml: spec.repository/spec.project {pointer.repository}/{pointer.project} do not match"
            f" the app directory {'/'.join(segments)}"
        )


def _read(path: Path, name: str, *, required: bool) -> bytes | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise LimitExceededError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        if required:
            raise InvalidInputError(f"{name}: missing ({path})") from None
        return None
    except IsADirectoryError:
        raise InvalidInputError(f"{name}: is a directory") from None
    except OSError as exc:
        raise InvalidInputError(f"{name}: cannot be read ({exc.strerror})") from None


def _one_document(data: bytes, where: str) -> Any:
    from forge.cmp.documents import load_documents

    documents = load_documents(data, where)
    if len(documents) != 1:
        raise InvalidInputError(f"{where}: must hold exactly one document, found {len(documents)}")
    return documents[0]


def _memo_key(fingerprint: bytes, segments: list[str], *inputs: bytes | None) -> str:
    digest = hashlib.sha256(_MEMO_VERSION)
    digest.update(fingerprint)
    digest.update("/".join(segments).encode() + b"\0")
    for data in inputs:
        digest.update(b"-\0" if data is None else f"{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _code_fingerprint() -> bytes:
    import forge

    stamps: list[str] = []
    for base in forge.__path__:
        for package in ("cmp", "releases"):
            folder = Path(base) / package
            if folder.is_dir():
                for module in sorted(folder.glob("*.py")):
                    stat = module.stat()
                    stamps.append(f"{module}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(stamps).encode()


def _stored(cache: ReleaseCache, folder: str, key: str) -> bytes | None:
    """An entry written by :func:`_store`, if whole (its sha256 header matches), else None (and it is deleted)."""
    path = cache.root / folder / key
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header, _, output = data.partition(b"\n")
    if not output or header.decode("ascii", "replace") != f"sha256:{hashlib.sha256(output).hexdigest()}":
        path.unlink(missing_ok=True)
        return None
    return output


def _store(cache: ReleaseCache, folder: str, key: str, output: bytes) -> None:
    header = f"sha256:{hashlib.sha256(output).hexdigest()}\n".encode()
    write_atomic(cache.root / folder / key, header + output)

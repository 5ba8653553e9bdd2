"""generate() end to end against the in-memory registry: output, cache, memo and every refusal;
run_generate() prints everything or nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cmp.support import (
    COMMIT,
    ENV_DATA,
    PROJECT_DATA,
    argocd_environ,
    pointer_document,
    push_release,
    release_layers,
    sample_objects,
    write_gitops,
)

from forge.cmp.__main__ import main, run_generate
from forge.cmp.generate import Context, generate
from forge.cmp.release import ReleaseCache
from forge.errors import ForgeError, InvalidInputError, NotFoundError, PermanentError
from forge.ports.fakes.memory_registry import MemoryRegistry
from forge.ports.registry import ArtifactRegistry, Layer


class _Opened:
    """An ``open_registry`` that counts how often the registry was needed."""

    def __init__(self, registry: ArtifactRegistry | None) -> None:
        self.registry = registry
        self.calls = 0

    def __call__(self) -> ArtifactRegistry:
        self.calls += 1
        if self.registry is None:
            raise AssertionError("the registry was not expected to be used")
        return self.registry


def _push(registry: MemoryRegistry, layers: list[Layer] | None = None, **kwargs: Any) -> str:
    return asyncio.run(push_release(registry, release_layers(sample_objects()) if layers is None else layers, **kwargs))


def _render(app: Path, root: Path, opened: _Opened, cache: Path | None) -> list[dict[str, Any]]:
    output = generate(
        app,
        argocd_environ(app, root),
        Context(),
        cache=None if cache is None else ReleaseCache(cache),
        open_registry=opened,
    )
    return [json.loads(part) for part in output.decode().split("---\n")[1:]]


def test_objects_sorted_with_merged_values_then_the_projects_config(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    app = write_gitops(tmp_path / "gitops", _push(registry), project_data=PROJECT_DATA)
    documents = _render(app, tmp_path / "gitops", _Opened(registry), None)
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("ConfigMap", "a-settings"),
        ("ConfigMap", "web-flags"),
        ("Deployment", "web"),
        ("Service", "web"),
        ("EnvironmentConfig", "web-dev"),
    ]
    deployment = documents[2]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3  # project beats environment, and stays an int
    assert container["resources"] == {"limits": {"memory": "512Mi"}}  # deep merge, null deleted cpu
    assert container["env"][0]["value"] == "https://dev.example.com:8443/v1"
    assert container["env"][1]["value"] == "${{ not.an.expression }}"
    assert documents[3]["spec"]["ports"] == [{"port": 443}, {"port": 8443}]  # the list replaced
    assert documents[4]["data"] == PROJECT_DATA  # printed as read


def test_without_a_project_config_only_the_objects_are_printed(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    app = write_gitops(tmp_path, _push(registry))
    documents = _render(app, tmp_path, _Opened(registry), None)
    assert [d["kind"] for d in documents] == ["ConfigMap", "ConfigMap", "Deployment", "Service"]
    assert documents[2]["spec"]["replicas"] == ENV_DATA["replicas"]


def test_a_cached_release_needs_no_registry_and_the_memo_replays(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    app = write_gitops(tmp_path / "g", _push(registry))
    cold = _render(app, tmp_path / "g", _Opened(registry), tmp_path / "cache")
    assert list((tmp_path / "cache" / "renders").iterdir())
    assert _render(app, tmp_path / "g", _Opened(None), tmp_path / "cache") == cold  # memo
    (tmp_path / "g" / "dev" / "env.yaml").write_text(
        json.dumps({**json.loads(json.dumps(_env("dev"))), "data": {**ENV_DATA, "replicas": 5}})
    )
    warm = _render(app, tmp_path / "g", _Opened(None), tmp_path / "cache")  # release cache, new values
    assert warm[2]["spec"]["replicas"] == 5


def test_a_cached_release_renders_from_its_stored_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = MemoryRegistry()
    app = write_gitops(tmp_path / "g", _push(registry))
    cold = _render(app, tmp_path / "g", _Opened(registry), tmp_path / "cache")
    [stored] = (tmp_path / "cache" / "objects").iterdir()
    shutil.rmtree(tmp_path / "cache" / "renders")

    def unexpected(*args: object, **kwargs: object) -> None:
        raise AssertionError("the resources layer was read again")

    monkeypatch.setattr("forge.cmp.extract.read_objects", unexpected)
    assert _render(app, tmp_path / "g", _Opened(None), tmp_path / "cache") == cold
    monkeypatch.undo()

    stored.write_bytes(stored.read_bytes()[:-2] + b"]]")  # corrupt: read from the layer again, and rewritten
    shutil.rmtree(tmp_path / "cache" / "renders")
    assert _render(app, tmp_path / "g", _Opened(None), tmp_path / "cache") == cold
    header, _, body = stored.read_bytes().partition(b"\n")
    assert header.decode() == "sha256:" + hashlib.sha256(body).hexdigest()


def _env(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.crossplane.io/v1beta1",
        "kind": "EnvironmentConfig",
        "metadata": {"name": name},
    }


def test_a_corrupt_cache_is_fetched_again(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    app = write_gitops(tmp_path / "g", _push(registry))
    cold = _render(app, tmp_path / "g", _Opened(registry), tmp_path / "cache")
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:-1] + b"!")
    opened = _Opened(registry)
    assert _render(app, tmp_path / "g", opened, tmp_path / "cache") == cold
    assert opened.calls == 1


@pytest.mark.parametrize(
    ("layers", "artifact_type", "error", "reason"),
    [
        (None, "application/vnd.oci.image.config.v1+json", PermanentError, "artifactType"),
        ("metadata-only", None, PermanentError, "0 layers of media type application/vnd.forge.resources"),
        ("resources-only", None, PermanentError, "0 layers of media type application/vnd.forge.release.metadata"),
        ("other-commit", None, PermanentError, "commit_sha"),
        ("other-project", None, PermanentError, "project"),
        ("other-resources", None, PermanentError, "resources_digest"),
        ("empty", None, InvalidInputError, "no Kubernetes object"),
    ],
)
def test_a_release_that_does_not_verify_is_refused(
    tmp_path: Path, layers: str | None, artifact_type: str | None, error: type[ForgeError], reason: str
) -> None:
    registry = MemoryRegistry()
    good = release_layers(sample_objects())
    chosen = {
        None: good,
        "metadata-only": good[:1],
        "resources-only": good[1:],
        "other-commit": release_layers(sample_objects(), commit="0" * 40)[:1] + good[1:],
        "other-project": release_layers(sample_objects(), project="api")[:1] + good[1:],
        "other-resources": good[:1] + release_layers(sample_objects()[:1])[1:],
        "empty": release_layers([]),
    }[layers]
    digest = _push(registry, chosen, **({"artifact_type": artifact_type} if artifact_type else {}))
    app = write_gitops(tmp_path, digest)
    with pytest.raises(error, match=reason):
        _render(app, tmp_path, _Opened(registry), tmp_path / "cache")
    if layers != "empty":  # a release that verifies is cached, even when it renders nothing
        assert not (tmp_path / "cache" / "releases").exists()


def test_a_digest_the_registry_does_not_hold_is_not_found(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    _push(registry)
    app = write_gitops(tmp_path, "sha256:" + "0" * 64)
    with pytest.raises(NotFoundError):
        _render(app, tmp_path, _Opened(registry), None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no-env", "dev/env.yaml: missing"),
        ("no-pointer", "release.yaml: missing"),
        ("two-pointers", "exactly one document"),
        ("other-repository", "do not match the app directory"),
        ("bad-source-path", "ARGOCD_APP_SOURCE_PATH"),
        ("other-source-path", "does not end with"),
        ("project-env-unnamed", "metadata.name"),
        ("unknown-value", "no value for env.replicas"),
    ],
)
def test_bad_gitops_inputs_are_refused(tmp_path: Path, change: str, reason: str) -> None:
    registry = MemoryRegistry()
    digest = _push(registry)
    root = tmp_path / "g"
    app = write_gitops(
        root,
        digest,
        env_data={k: v for k, v in ENV_DATA.items() if k != "replicas"} if change == "unknown-value" else None,
    )
    environ = argocd_environ(app, root)
    if change == "no-env":
        (root / "dev" / "env.yaml").unlink()
    elif change == "no-pointer":
        (app / "release.yaml").unlink()
    elif change == "two-pointers":
        text = json.dumps(pointer_document(digest))
        (app / "release.yaml").write_text(f"{text}\n---\n{text}\n")
    elif change == "other-repository":
        (app / "release.yaml").write_text(json.dumps(pointer_document(digest, repository="acme/other")))
    elif change == "bad-source-path":
        environ["ARGOCD_APP_SOURCE_PATH"] = "dev/acme/shop/web"
    elif change == "other-source-path":
        environ["ARGOCD_APP_SOURCE_PATH"] = "prod/apps/acme/shop/web"
    elif change == "project-env-unnamed":
        (app / "env.yaml").write_text(json.dumps({**_env("x"), "metadata": {}}))
    with pytest.raises(InvalidInputError, match=reason):
        generate(app, environ, Context(), cache=None, open_registry=_Opened(registry))


def test_on_error_nothing_is_printed_and_one_line_names_app_environment_release(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    app = write_gitops(tmp_path, "sha256:" + "ab" * 32)
    environ = argocd_environ(app, tmp_path, FORGE_CMP_CACHE=str(tmp_path / "cache"))  # no registry URL
    assert run_generate(app, environ) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        f"forge-cmp: app acme-shop-web (environment dev, release acme/shop/web@{COMMIT[:12]} sha256:abababababab):"
    )
    assert "FORGE_REGISTRY__URL is not set" in err


def test_a_bad_pointer_is_named_before_the_release_is_known(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    app = write_gitops(tmp_path, "sha256:" + "ab" * 32, pointer={"apiVersion": "v1", "kind": "ConfigMap"})
    assert run_generate(app, argocd_environ(app, tmp_path, FORGE_CMP_CACHE=str(tmp_path / "c"))) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err == (
        "forge-cmp: app acme-shop-web (environment dev, release ?): release.yaml: apiVersion: expected"
        " forge.projectcatalyst.io/v1alpha1, got 'v1'\n"
    )


def test_a_bug_is_one_line_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:
        raise KeyError("boom")

    monkeypatch.setattr("forge.cmp.generate.generate", broken)
    assert run_generate(tmp_path, {"FORGE_CMP_CACHE": str(tmp_path)}) == 70
    out, err = capfd.readouterr()
    assert (out, err) == ("", "forge-cmp: app ? (environment ?, release ?): internal error: KeyError: 'boom'\n")


def test_usage(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["render"]) == 2
    assert main(["--help"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("usage: forge-cmp generate")
    assert err.startswith("forge-cmp: unknown arguments render")

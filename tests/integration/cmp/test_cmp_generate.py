"""``forge-cmp generate`` as Argo CD runs it (a subprocess in the app directory) against a real registry.

The release is pushed the way the release worker pushes it (``forge.releases`` layers,
``OrasRegistry.push_artifact``, ``<owner>/<repo>/<project>:sha-<commit>``); the output is compared
with ``tests/golden/cmp/dev-acme-shop-web.yaml`` (``FORGE_UPDATE_GOLDEN=1`` rewrites it; review
the diff). Every failure: a non-zero exit, exactly one line on stderr, nothing on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.registry.test_oras_registry import PASSWORD, htpasswd_line
from tests.unit.cmp.support import (
    ENV_DATA,
    PROJECT_DATA,
    argocd_environ,
    push_release,
    release_layers,
    sample_objects,
    write_gitops,
)

from forge.adapters.oras_registry import OrasRegistry
from forge.embedded.process import ServiceProcess, free_port
from forge.embedded.registry import start_registry
from forge.ports.registry import Layer

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "cmp" / "dev-acme-shop-web.yaml"
FORGE_CMP = str(Path(sys.executable).with_name("forge-cmp"))


@dataclass
class Run:
    code: int
    out: str
    err: str


def _generate(app: Path, root: Path, registry_url: str, cache: Path, **extra: str) -> Run:
    environ: Mapping[str, str] = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cache.parent),
        "FORGE_REGISTRY__URL": registry_url,
        "FORGE_CMP_CACHE": str(cache),
        **argocd_environ(app, root),
        **extra,
    }
    done = subprocess.run(
        [FORGE_CMP, "generate"], check=False, cwd=app, env=environ, capture_output=True, text=True, timeout=60
    )
    return Run(done.returncode, done.stdout, done.stderr)


def _refused(run: Run, code: int, *causes: str) -> None:
    assert run.code == code, run
    assert run.out == ""
    assert run.err.count("\n") == 1, run.err
    assert run.err.startswith("forge-cmp: app acme-shop-web (environment dev, release acme/shop/web@"), run.err
    assert "Traceback" not in run.err
    assert any(cause in run.err for cause in causes), run.err


async def _push(url: str, layers: list[Layer] | None = None, **kwargs: str) -> str:
    chosen = release_layers(sample_objects()) if layers is None else layers
    return await push_release(OrasRegistry(url), chosen, **kwargs)


async def test_the_render_matches_the_golden_file(registry_server: ServiceProcess, tmp_path: Path) -> None:
    digest = await _push(registry_server.url)
    app = write_gitops(tmp_path / "gitops", digest, project_data=PROJECT_DATA)
    run = _generate(app, tmp_path / "gitops", registry_server.url, tmp_path / "cache")
    assert (run.code, run.err) == (0, ""), run
    if os.environ.get("FORGE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(run.out, encoding="utf-8")
    assert run.out == GOLDEN.read_text(encoding="utf-8"), f"{GOLDEN} differs; FORGE_UPDATE_GOLDEN=1 and review"
    again = _generate(app, tmp_path / "gitops", registry_server.url, tmp_path / "cache-2")
    assert again.out == run.out  # deterministic, cold


async def test_a_tampered_digest_is_refused(registry_server: ServiceProcess, tmp_path: Path) -> None:
    digest = await _push(registry_server.url)
    tampered = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    app = write_gitops(tmp_path, tampered)
    _refused(_generate(app, tmp_path, registry_server.url, tmp_path / "cache"), 1, "not found")


async def test_a_wrong_artifact_type_is_refused(registry_server: ServiceProcess, tmp_path: Path) -> None:
    digest = await _push(registry_server.url, artifact_type="application/vnd.forge.artifact.v1")
    app = write_gitops(tmp_path, digest)
    _refused(_generate(app, tmp_path, registry_server.url, tmp_path / "cache"), 1, "artifactType")


async def test_a_missing_layer_is_refused(registry_server: ServiceProcess, tmp_path: Path) -> None:
    digest = await _push(registry_server.url, release_layers(sample_objects())[:1])
    app = write_gitops(tmp_path, digest)
    _refused(
        _generate(app, tmp_path, registry_server.url, tmp_path / "cache"),
        1,
        "0 layers of media type application/vnd.forge.resources.v1.tar+gzip",
    )


async def test_a_registry_that_is_down_is_a_transient_refusal(tmp_path: Path) -> None:
    app = write_gitops(tmp_path, "sha256:" + "ab" * 32)
    _refused(_generate(app, tmp_path, f"http://127.0.0.1:{free_port()}", tmp_path / "cache"), 3, "unreachable")


async def test_a_warm_cache_renders_with_the_registry_stopped(tmp_path: Path) -> None:
    registry = start_registry(tmp_path / "registry")
    try:
        digest = await _push(registry.url)
        root = tmp_path / "gitops"
        app = write_gitops(root, digest)
        cold = _generate(app, root, registry.url, tmp_path / "cache")
        assert (cold.code, cold.err) == (0, ""), cold
    finally:
        registry.stop()
    memo = _generate(app, root, registry.url, tmp_path / "cache")
    assert (memo.code, memo.out) == (0, cold.out)
    write_gitops(root, digest, env_data={**ENV_DATA, "replicas": 7})  # new values: a render, not the memo
    warm = _generate(app, root, registry.url, tmp_path / "cache")
    assert (warm.code, warm.err) == (0, ""), warm
    assert warm.out == cold.out.replace('"replicas": 1,', '"replicas": 7,')
    assert warm.out != cold.out
    _refused(_generate(app, root, registry.url, tmp_path / "empty-cache"), 3, "unreachable")


def test_the_plugin_yaml_is_a_sidecar_cmp_named_forge_release_v1() -> None:
    from ruamel.yaml import YAML

    plugin = YAML(typ="safe", pure=True).load(Path(__file__).resolve().parents[3] / "cmp-plugin" / "plugin.yaml")
    assert plugin["apiVersion"] == "argoproj.io/v1alpha1"
    assert plugin["kind"] == "ConfigManagementPlugin"
    assert plugin["metadata"]["name"] == "forge-release"
    assert plugin["spec"]["version"] == "v1"
    assert "discover" not in plugin["spec"]
    assert [*plugin["spec"]["generate"]["command"], *plugin["spec"]["generate"]["args"]] == ["forge-cmp", "generate"]


@pytest.mark.parametrize("argv", [["forge-cmp"], ["forge-cmp", "render"]])
def test_usage_errors(argv: list[str]) -> None:
    done = subprocess.run([FORGE_CMP, *argv[1:]], check=False, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (2, "")


async def test_renders_import_neither_oras_requests_asyncio_nor_pydantic(
    registry_server: ServiceProcess, tmp_path: Path
) -> None:
    """The start-up budget (docs/cmp.md "Speed"): a cold render pulls with the stdlib reader."""
    digest = await _push(registry_server.url)
    app = write_gitops(tmp_path / "gitops", digest, project_data=PROJECT_DATA)
    modules = tmp_path / "modules.txt"
    script = (
        "import sys\nfrom forge.cmp.__main__ import main\ncode = main(['generate'])\n"
        f"open({str(modules)!r}, 'w').write('\\n'.join(sys.modules))\nsys.exit(code)\n"
    )
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "FORGE_REGISTRY__URL": registry_server.url,
        "FORGE_CMP_CACHE": str(tmp_path / "cache"),
        **argocd_environ(app, tmp_path / "gitops"),
    }
    for render in ("cold", "warm"):
        argv = [sys.executable, "-c", script]
        done = subprocess.run(argv, check=False, cwd=app, env=environ, capture_output=True, timeout=60)
        assert (done.returncode, done.stderr) == (0, b""), (render, done)
        loaded = {name.partition(".")[0] for name in modules.read_text().split()}
        assert loaded.isdisjoint({"oras", "requests", "urllib3", "asyncio", "pydantic", "pydantic_settings"}), render
        assert render == "cold" or "tarfile" not in loaded, render  # a cached release: its stored objects
        shutil.rmtree(tmp_path / "cache" / "renders")


async def test_concurrent_cold_renders_of_one_digest_share_the_cache_safely(
    registry_server: ServiceProcess, tmp_path: Path
) -> None:
    """Argo CD runs generates in parallel: several processes pull the same digest into one empty cache at once."""
    digest = await _push(registry_server.url)
    root = tmp_path / "gitops"
    app = write_gitops(root, digest, project_data=PROJECT_DATA)
    cache = tmp_path / "cache"
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "FORGE_REGISTRY__URL": registry_server.url,
        "FORGE_CMP_CACHE": str(cache),
        **argocd_environ(app, root),
    }
    processes = [
        subprocess.Popen([FORGE_CMP, "generate"], cwd=app, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(process.communicate(timeout=60), process.returncode) for process in processes]
    assert [(code, err) for (_, err), code in results] == [(0, b"")] * 4
    assert {out for (out, _), _ in results} == {GOLDEN.read_bytes()}
    assert not [path for path in cache.rglob("*") if path.name.startswith(".tmp-")]  # every write renamed
    with_registry_down = _generate(app, root, f"http://127.0.0.1:{free_port()}", cache)  # the cache is whole
    assert (with_registry_down.code, with_registry_down.out) == (0, GOLDEN.read_text(encoding="utf-8"))
    shutil.rmtree(cache / "renders")
    warm = _generate(app, root, f"http://127.0.0.1:{free_port()}", cache)
    assert (warm.code, warm.out) == (0, GOLDEN.read_text(encoding="utf-8"))


async def test_registry_credentials_come_from_the_environment_and_a_refusal_is_one_line(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("forge", PASSWORD))
    registry = start_registry(tmp_path / "registry", htpasswd=htpasswd)
    try:
        layers = release_layers(sample_objects())
        digest = await push_release(OrasRegistry(registry.url, username="forge", password=PASSWORD), layers)
        root = tmp_path / "gitops"
        app = write_gitops(root, digest, project_data=PROJECT_DATA)
        good = {"FORGE_REGISTRY__USERNAME": "forge", "FORGE_REGISTRY__PASSWORD": PASSWORD}
        wrong = {**good, "FORGE_REGISTRY__PASSWORD": "not-the-password"}
        refused = _generate(app, root, registry.url, tmp_path / "cache", **wrong)
        _refused(refused, 1, "denied access")
        assert "not-the-password" not in refused.err
        _refused(_generate(app, root, registry.url, tmp_path / "cache"), 1, "denied access")  # anonymous
        rendered = _generate(app, root, registry.url, tmp_path / "cache", **good)
        assert (rendered.code, rendered.err, rendered.out) == (0, "", GOLDEN.read_text(encoding="utf-8"))
    finally:
        registry.stop()


async def test_each_render_appends_one_json_record_to_forge_cmp_log(
    registry_server: ServiceProcess, tmp_path: Path
) -> None:
    """Render time as a structured field (issue 11): registry, then memo, then a refusal; stdout and the
    refusal's one line on stderr are as without the log."""
    digest = await _push(registry_server.url)
    app = write_gitops(tmp_path / "gitops", digest, project_data=PROJECT_DATA)
    log = tmp_path / "cmp.log"
    cold = _generate(app, tmp_path / "gitops", registry_server.url, tmp_path / "cache", FORGE_CMP_LOG=str(log))
    memo = _generate(app, tmp_path / "gitops", registry_server.url, tmp_path / "cache", FORGE_CMP_LOG=str(log))
    assert (cold.code, cold.err, memo.out) == (0, "", cold.out)
    (app / "release.yaml").write_text("kind: Nothing\n", encoding="utf-8")
    refused = _generate(app, tmp_path / "gitops", registry_server.url, tmp_path / "cache", FORGE_CMP_LOG=str(log))
    assert (refused.code, refused.out, refused.err.count("\n")) == (1, "", 1), refused

    first, second, third = (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines())
    for record in (first, second, third):
        assert (record["service"], record["app"], record["environment"]) == ("forge-cmp", "acme-shop-web", "dev")
        assert isinstance(record["render_ms"], float)
        assert record["render_ms"] > 0
    assert (first["source"], first["exit"], first["level"], first["message"]) == ("registry", 0, "INFO", "rendered")
    assert (first["digest"], first["bytes"]) == (digest, len(cold.out.encode()))
    assert first["release"].startswith("acme/shop/web@")
    assert (second["source"], second["exit"], second["bytes"]) == ("memo", 0, len(cold.out.encode()))
    assert (third["exit"], third["level"], third["bytes"]) == (1, "ERROR", 0)
    assert third["message"] in refused.err


async def test_a_log_that_cannot_be_written_changes_nothing_but_a_warning(
    registry_server: ServiceProcess, tmp_path: Path
) -> None:
    digest = await _push(registry_server.url)
    app = write_gitops(tmp_path / "gitops", digest, project_data=PROJECT_DATA)
    run = _generate(
        app, tmp_path / "gitops", registry_server.url, tmp_path / "cache", FORGE_CMP_LOG=str(tmp_path / "no" / "log")
    )
    assert run.code == 0
    assert run.out
    assert run.err.startswith("forge-cmp: FORGE_CMP_LOG ")
    assert "cannot append" in run.err

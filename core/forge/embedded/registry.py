"""A real OCI distribution registry for tests and ``forge dev up``: Debian's ``docker-registry`` (DESIGN §9).

No pip-installable registry exists, so ``scripts/setup`` installs the Debian package when it runs as
root; we never use its systemd unit, only ``docker-registry serve <config>`` in the foreground.

Layout of ``data_dir``::

    data_dir/config.yml     written on every start (port, storage, optional htpasswd)
    data_dir/storage/       the registry's filesystem storage (blobs and repositories)
    data_dir/registry.log   server output

``http.secret`` is set so the registry does not warn on every start; it only signs upload state
between requests to this one process. Deleting is enabled: ``DELETE`` of a manifest is how a tag is
removed in the distribution API.
"""

from __future__ import annotations

import json
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from forge.embedded.process import ServiceProcess, free_port, http_ready, start_service
from forge.errors import ServiceUnavailableError

__all__ = ["REGISTRY_BINARY", "registry_binary", "start_registry"]

REGISTRY_BINARY = "/usr/bin/docker-registry"
_INSTALL = "install it with 'apt-get install docker-registry' as root, or run scripts/setup as root"


def registry_binary() -> str | None:
    """Path of ``docker-registry`` (the Debian package's, else one on PATH), or None when absent."""
    if Path(REGISTRY_BINARY).is_file():
        return REGISTRY_BINARY
    return shutil.which("docker-registry")


def start_registry(
    data_dir: Path, port: int | None = None, *, htpasswd: Path | None = None, timeout: float = 30.0
) -> ServiceProcess:
    """Run ``docker-registry serve`` on ``127.0.0.1:<port>``; ready when ``GET /v2/`` answers 200.

    ``htpasswd`` (a bcrypt htpasswd file) turns on basic auth; then readiness is any answer of
    ``/v2/`` (401 without credentials). ``url`` is ``http://127.0.0.1:<port>``.
    """
    exe = registry_binary()
    if exe is None:
        raise ServiceUnavailableError(f"docker-registry is not installed: {_INSTALL}")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = (data_dir / "storage").resolve()
    storage.mkdir(exist_ok=True)
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "forge", "path": str(htpasswd.resolve())}}
    config_path = data_dir / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML; no YAML writer needed here
    url = f"http://127.0.0.1:{port}"
    return start_service(
        "docker-registry",
        [exe, "serve", str(config_path.resolve())],
        url=url,
        ready=http_ready(f"{url}/v2/") if htpasswd is None else _answers(f"{url}/v2/"),
        log=data_dir / "registry.log",
        timeout=timeout,
    )


def _answers(url: str) -> Callable[[], bool]:
    """Ready once the server answers at all (401 from a registry that requires credentials)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL we built
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    return check

"""The platform's own processes (API, controller, workers) started against given services, for e2e tests.

Like ``forge dev up``, the platform brings its own OCI registry (Debian's ``docker-registry``, when
installed): it starts on construction under ``<logs>/../registry``, is one of ``processes`` (stopped
with them), and ``FORGE_REGISTRY__URL`` in ``env`` points every process started afterwards at it. An
``env`` that already names a registry is kept as given.

Likewise its own OIDC issuer (``forge.embedded.issuer``, under ``<logs>/../issuer``) unless ``env``
names ``FORGE_AUTH__ISSUER``: :meth:`Platform.token` is a token of it (every role, by default) and
:meth:`Platform.auth_headers` the header tests send.

And its own GitOps repository (``forge.embedded.gitops``, ``<logs>/../gitops.git``, seeded with the
dev, staging and production environments) unless ``env`` names ``FORGE_GITOPS__URL``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from forge.embedded.gitops import create_gitops_repository
from forge.embedded.issuer import LocalIssuer, start_issuer
from forge.embedded.process import ServiceProcess, binary, start_service
from forge.embedded.registry import registry_binary, start_registry

__all__ = ["Platform"]


@dataclass
class Platform:
    api_url: str
    env: dict[str, str]
    cache_dir: Path
    logs: Path
    git_base: Path
    git_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "FORGE_REGISTRY__URL" not in self.env and registry_binary() is not None:
            registry = self.processes["registry"] = start_registry(self.logs.parent / "registry")
            self.env["FORGE_REGISTRY__URL"] = registry.url
        if "FORGE_AUTH__ISSUER" not in self.env:
            issuer = self.processes["issuer"] = start_issuer(self.logs.parent / "issuer")
            self.env["FORGE_AUTH__ISSUER"] = issuer.url
            self.env["FORGE_AUTH__AUDIENCE"] = issuer.extra["audience"]
        if "FORGE_GITOPS__URL" not in self.env:
            self.env["FORGE_GITOPS__URL"] = create_gitops_repository(self.logs.parent / "gitops.git")
            self.env.setdefault("FORGE_GITOPS__WORK_DIR", str((self.logs.parent / "gitops-work").resolve()))

    def token(self, roles: tuple[str, ...] = ("developer", "approver", "operator", "service-account")) -> str:
        """An access token of the platform's own issuer holding ``roles``."""
        issuer = self.processes["issuer"]
        base = issuer.url.split("/realms/", 1)[0]
        return LocalIssuer(Path(issuer.extra["home"]), base).mint("e2e-tester", roles)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    @property
    def registry_url(self) -> str | None:
        return self.env.get("FORGE_REGISTRY__URL")

    @property
    def gitops_url(self) -> str:
        """The GitOps repository every process deploys to (``<logs>/../gitops.git`` unless ``env`` named one)."""
        return self.env["FORGE_GITOPS__URL"]

    def start(self, name: str, argv: list[str]) -> ServiceProcess:
        """Start one of our processes (``argv[0]`` is a console script of this venv) as ``name``."""
        proc = start_service(
            name, [binary(argv[0]), *argv[1:]], url="", ready=lambda: True, log=self.logs / f"{name}.log", env=self.env
        )
        self.processes[name] = proc
        return proc

    def start_worker(self, name: str = "worker", kind: str = "discovery") -> ServiceProcess:
        return self.start(name, ["forge-worker", kind])

    def kill(self, name: str) -> None:
        """SIGKILL the process group of ``name`` (no clean shutdown)."""
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stop()

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text(errors='replace')[-3000:]}" for p in self.processes.values())

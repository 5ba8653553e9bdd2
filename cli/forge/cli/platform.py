"""The embedded single-machine platform (DESIGN §9): real services plus our processes, by PID.

State lives in ``<home>/platform.json`` so ``forge dev down`` and a later ``forge run`` find it: the
API URL, the environment our processes got, the PID of every process and the address each service
answers on, all keyed by the names users know (``nats``, ``postgres``, ``s3``, ``registry``, ``api``, ...).
The OCI registry (Debian's ``docker-registry``) is started when it is installed; without it the
platform runs pipelines but cannot publish releases, and ``registry_url`` is null.

The GitOps repository is ``<home>/gitops.git`` (``forge.embedded.gitops``, seeded with ``dev``,
``staging`` and ``production``) unless ``FORGE_GITOPS__URL`` names another; every process gets
``FORGE_GITOPS__URL`` and ``FORGE_GITOPS__WORK_DIR``, and ``forge dev status --json`` shows it as
``gitops_url``.

Authentication stays on: unless ``FORGE_AUTH__ISSUER`` names an issuer (then every ``FORGE_*``
variable reaches every process, as the environment is inherited), the platform starts the local OIDC
issuer (``forge.embedded.issuer``, keys and clients under ``<home>/issuer``) and gives every process
``FORGE_AUTH__ISSUER`` and ``FORGE_AUTH__AUDIENCE``; the CLI takes its tokens from there
(``forge.cli.api_client``).

A recorded platform with any process still alive belongs to whoever started it (a ``forge dev up``
with workers mid-step): ``forge run`` and ``forge dev up`` reuse it when every service answers and
otherwise fail naming what is down (:class:`PlatformUnhealthyError`); they never stop it. Only a
record whose processes are all gone is stale, and is replaced by a new platform.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from forge.embedded.process import (
    ServiceProcess,
    binary,
    free_port,
    http_ready,
    process_alive,
    start_service,
    stop_pid,
)
from forge.errors import ServiceUnavailableError

__all__ = [
    "HEALTHY",
    "Platform",
    "PlatformUnhealthyError",
    "platform_down",
    "platform_health",
    "platform_up",
    "running_platform",
]

_STATE = "platform.json"
_BUCKET = "forge"
HEALTHY = "ok"  # the state of a service that answers
# /readyz check -> the service it depends on
_READYZ_SERVICES = {"database": "postgres", "nats": "nats", "objects": "s3"}


@dataclass
class Platform:
    home: Path
    api_url: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)  # name -> "host:port" it answers on

    def save(self) -> None:
        data = {
            "home": str(self.home),
            "api_url": self.api_url,
            "env": self.env,
            "pids": self.pids,
            "services": self.services,
        }
        (self.home / _STATE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> Platform | None:
        path = home / _STATE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(
                home=Path(data["home"]),
                api_url=data["api_url"],
                env=data["env"],
                pids={name: int(pid) for name, pid in data["pids"].items()},
                services=dict(data.get("services", {})),  # absent in records of older versions
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServiceUnavailableError(
                f"{path} is not a platform record ({exc}); remove it and run `forge dev up`"
            ) from exc

    def alive(self) -> list[str]:
        """Names of the recorded processes that still run."""
        return [name for name, pid in self.pids.items() if process_alive(pid)]


class PlatformUnhealthyError(ServiceUnavailableError):
    """A recorded platform still runs, but some of its services do not answer; nobody stops it for you."""

    code = "platform_unhealthy"

    def __init__(self, home: Path, down: dict[str, str]) -> None:
        problems = ", ".join(f"{name} {reason}" for name, reason in down.items())
        super().__init__(
            f"the embedded platform in {home} is unhealthy: {problems}; run 'forge dev down' then 'forge dev up'",
            details={"home": str(home), "down": down},
        )
        self.down = down


def _address(url: str) -> str:
    """``host:port`` of a service URL (``nats://h:p``, ``postgresql://u@h:p/db``, ``h:p``)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    return f"{parts.hostname}:{parts.port}"


def _tcp_answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _api_health(api_url: str) -> str:
    """``ok`` when ``/readyz`` answers 200; else which of its dependencies failed (from the 503 body)."""
    try:
        with urllib.request.urlopen(f"{api_url}/readyz", timeout=10):  # noqa: S310 - loopback URL we built
            return HEALTHY
    except urllib.error.HTTPError as exc:
        try:
            checks = json.loads(exc.read() or b"{}").get("checks", {})
        except (ValueError, AttributeError, OSError):
            checks = {}
        failing = [_READYZ_SERVICES.get(check, check) for check, state in checks.items() if state != HEALTHY]
        if failing:
            return f"is not ready ({', '.join(failing)} failing)"
        return f"is not ready (HTTP {exc.code})"
    except OSError:
        return f"is not answering ({_address(api_url)})"


def platform_health(platform: Platform) -> dict[str, str]:
    """Each recorded process by name: ``ok``, or why it is down (dead PID, closed port, failing readiness)."""
    health: dict[str, str] = {}
    for name, pid in platform.pids.items():
        address = platform.services.get(name)
        if not process_alive(pid):
            health[name] = f"is not running (pid {pid})"
        elif name == "api":
            health[name] = _api_health(platform.api_url)
        elif address is not None and not _tcp_answers(address):
            health[name] = f"is not answering ({address})"
        else:
            health[name] = HEALTHY
    return health


def running_platform(home: Path) -> Platform | None:
    """The platform recorded in ``home`` when its API still answers, else None."""
    platform = Platform.load(home)
    if platform is not None and http_ready(f"{platform.api_url}/readyz")():
        return platform
    return None


def platform_up(
    home: Path,
    *,
    on_start: Callable[[str], None] = lambda _name: None,
    on_note: Callable[[str], None] = lambda _note: None,
) -> tuple[Platform, bool]:
    """Start NATS, PostgreSQL, S3, the OCI registry, the API, the controller and the workers; reuse a running one.

    Returns the platform and whether this call started it. A recorded platform with a live process
    is never stopped here: it is reused when healthy, else :class:`PlatformUnhealthyError` names
    what is down.
    """
    existing = Platform.load(home)
    if existing is not None:
        if existing.alive():
            down = {name: state for name, state in platform_health(existing).items() if state != HEALTHY}
            if down:
                raise PlatformUnhealthyError(home, down)
            return existing, False
        _forget(home)  # stale: every recorded process is gone (nothing to signal; PIDs may be reused)
    from forge.embedded.issuer import start_issuer
    from forge.embedded.nats import start_nats
    from forge.embedded.postgres import start_postgres
    from forge.embedded.registry import registry_binary, start_registry
    from forge.embedded.s3 import start_s3

    home.mkdir(parents=True, exist_ok=True)
    started: dict[str, ServiceProcess] = {}
    try:
        on_start("nats")
        nats = started["nats"] = start_nats(home / "nats")
        on_start("postgres")
        postgres = started["postgres"] = start_postgres(home / "postgres")
        on_start("s3")
        s3 = started["s3"] = start_s3(home / "s3")
        registry_env: dict[str, str] = {}
        if registry_binary() is not None:
            on_start("registry")
            registry = started["registry"] = start_registry(home / "registry")
            registry_env["FORGE_REGISTRY__URL"] = registry.url
        else:
            on_note("docker-registry is not installed: pipelines run, releases cannot be published (see scripts/setup)")
        auth_env: dict[str, str] = {}
        if not os.environ.get("FORGE_AUTH__ISSUER"):
            on_start("issuer")
            issuer = started["issuer"] = start_issuer(home / "issuer")
            auth_env = {"FORGE_AUTH__ISSUER": issuer.url, "FORGE_AUTH__AUDIENCE": issuer.extra["audience"]}
        gitops_env = _gitops_env(home)
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        env = {
            "FORGE_NATS__URL": nats.url,
            "FORGE_DATABASE__URL": os.environ.get("FORGE_DATABASE__URL", postgres.url),
            "FORGE_OBJECTS__ENDPOINT": s3.url,
            "FORGE_OBJECTS__ACCESS_KEY": s3.extra["access_key"],
            "FORGE_OBJECTS__SECRET_KEY": s3.extra["secret_key"],
            "FORGE_OBJECTS__BUCKET": _BUCKET,
            "FORGE_GIT__CACHE_DIR": str((home / "git-cache").resolve()),
            "FORGE_CI__WORK_DIR": str((home / "work").resolve()),
            "FORGE_API__PORT": str(api_port),
            "FORGE_API__PUBLIC_URL": api_url,
            "FORGE_API__ALLOW_LOCAL_CLONE_URLS": "true",  # local mirrors and git daemons
            **registry_env,
            **auth_env,
            **gitops_env,
        }
        logs = home / "logs"
        on_start("api")
        started["api"] = start_service(
            "api",
            [binary("forge-api")],
            url=api_url,
            ready=http_ready(f"{api_url}/readyz"),
            log=logs / "api.log",
            env=env,
        )
        for name, argv in (
            ("controller", ["forge-controller"]),
            ("worker-discovery", ["forge-worker", "discovery"]),
            ("worker-ci", ["forge-worker", "ci"]),
            ("worker-release", ["forge-worker", "artifact", "release"]),
        ):
            on_start(name)
            started[name] = start_service(
                name, [binary(argv[0]), *argv[1:]], url="", ready=lambda: True, log=logs / f"{name}.log", env=env
            )
    except BaseException:
        for proc in reversed(started.values()):
            proc.stop()
        raise
    platform = Platform(
        home=home.resolve(),
        api_url=api_url,
        env=env,
        pids={name: proc.pid for name, proc in started.items()},
        services={name: _address(proc.url) for name, proc in started.items() if proc.url},
    )
    platform.save()
    return platform, True


def _gitops_env(home: Path) -> dict[str, str]:
    """The embedded GitOps repository (created once, kept across restarts) unless FORGE_GITOPS__URL names one."""
    from forge.embedded.gitops import create_gitops_repository

    env = {"FORGE_GITOPS__WORK_DIR": str((home / "gitops-work").resolve())}
    if not os.environ.get("FORGE_GITOPS__URL"):
        env["FORGE_GITOPS__URL"] = create_gitops_repository(home / "gitops.git")
    return env


def platform_down(home: Path) -> list[str]:
    """Stop every recorded process, ours first, then the services; names stopped."""
    platform = Platform.load(home)
    if platform is None:
        return []
    for pid in reversed(platform.pids.values()):
        stop_pid(pid)
    _forget(home)
    return list(reversed(platform.pids))


def _forget(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (home / _STATE).unlink()


def describe(platform: Platform) -> dict[str, object]:
    return asdict(platform) | {
        "home": str(platform.home),
        "registry_url": platform.env.get("FORGE_REGISTRY__URL"),
        "issuer_url": platform.env.get("FORGE_AUTH__ISSUER", os.environ.get("FORGE_AUTH__ISSUER")),
        "gitops_url": platform.env.get("FORGE_GITOPS__URL", os.environ.get("FORGE_GITOPS__URL")),
    }


def require_running(home: Path) -> Platform:
    platform = running_platform(home)
    if platform is None:
        raise ServiceUnavailableError(f"no embedded platform is running in {home}; run `forge dev up`")
    return platform

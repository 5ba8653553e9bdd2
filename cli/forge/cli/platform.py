"""The embedded single-machine platform (DESIGN §9): real services plus our processes, by PID.

State lives in ``<home>/platform.json`` so ``forge dev down`` and a later ``forge run`` find it.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from forge.embedded.process import ServiceProcess, binary, free_port, start_service, stop_pid
from forge.errors import ServiceUnavailableError

__all__ = ["Platform", "platform_down", "platform_up", "running_platform"]

_STATE = "platform.json"
_BUCKET = "forge"


@dataclass
class Platform:
    home: Path
    api_url: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        data = {"home": str(self.home), "api_url": self.api_url, "env": self.env, "pids": self.pids}
        (self.home / _STATE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> Platform | None:
        path = home / _STATE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(home=Path(data["home"]), api_url=data["api_url"], env=data["env"], pids=data["pids"])


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL we built
                return bool(resp.status == 200)
        except OSError:
            return False

    return check


def running_platform(home: Path) -> Platform | None:
    """The platform recorded in ``home`` when its API still answers, else None."""
    platform = Platform.load(home)
    if platform is not None and _http_ok(f"{platform.api_url}/readyz")():
        return platform
    return None


def platform_up(home: Path, *, on_start: Callable[[str], None] = lambda _name: None) -> tuple[Platform, bool]:
    """Start NATS, PostgreSQL, S3, the API, the controller and the workers; reuse a running platform.

    Returns the platform and whether this call started it.
    """
    existing = running_platform(home)
    if existing is not None:
        return existing, False
    platform_down(home)
    from forge.embedded.nats import start_nats
    from forge.embedded.postgres import start_postgres
    from forge.embedded.s3 import start_s3

    home.mkdir(parents=True, exist_ok=True)
    started: list[ServiceProcess] = []
    try:
        on_start("nats")
        nats = start_nats(home / "nats")
        started.append(nats)
        on_start("postgres")
        postgres = start_postgres(home / "postgres")
        started.append(postgres)
        on_start("s3")
        s3 = start_s3(home / "s3")
        started.append(s3)
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
        }
        logs = home / "logs"
        on_start("api")
        started.append(
            start_service(
                "api",
                [binary("forge-api")],
                url=api_url,
                ready=_http_ok(f"{api_url}/readyz"),
                log=logs / "api.log",
                env=env,
            )
        )
        for name, argv in (
            ("controller", ["forge-controller"]),
            ("worker-discovery", ["forge-worker", "discovery"]),
            ("worker-ci", ["forge-worker", "ci"]),
        ):
            on_start(name)
            started.append(
                start_service(
                    name, [binary(argv[0]), *argv[1:]], url="", ready=lambda: True, log=logs / f"{name}.log", env=env
                )
            )
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    platform = Platform(home=home.resolve(), api_url=api_url, env=env, pids={p.name: p.pid for p in started})
    platform.save()
    return platform, True


def platform_down(home: Path) -> list[str]:
    """Stop every recorded process, ours first, then the services; names stopped."""
    platform = Platform.load(home)
    if platform is None:
        return []
    for pid in reversed(platform.pids.values()):
        stop_pid(pid)
    with contextlib.suppress(FileNotFoundError):
        (home / _STATE).unlink()
    return list(reversed(platform.pids))


def describe(platform: Platform) -> dict[str, object]:
    return asdict(platform) | {"home": str(platform.home)}


def require_running(home: Path) -> Platform:
    platform = running_platform(home)
    if platform is None:
        raise ServiceUnavailableError(f"no embedded platform is running in {home}; run `forge dev up`")
    return platform

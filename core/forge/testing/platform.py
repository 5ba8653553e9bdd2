"""The platform's own processes (API, controller, workers) started against given services, for e2e tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from forge.testing.process import ServiceProcess, binary, start_service

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

    def start_worker(self, name: str = "worker", kind: str = "discovery") -> ServiceProcess:
        proc = start_service(
            name,
            [binary("forge-worker"), kind],
            url="",
            ready=lambda: True,
            log=self.logs / f"{name}.log",
            env=self.env,
        )
        self.processes[name] = proc
        return proc

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text(errors='replace')[-3000:]}" for p in self.processes.values())

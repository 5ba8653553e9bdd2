"""Test-side helpers shared by the engine tests.

For the LocalWorkflowEngine tests (flat and nested DAGs): workflow templates are built as plain
Argo dicts; ordering and concurrency are observed through ``start NAME`` / ``end NAME`` lines the
tasks append to a log file.

For fake HTTP servers (the fake Argo Servers): ``Outage``, a switch that makes the server answer
the next N requests with an error (503 by default) before it answers normally again.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.ports.engine import NodePhase, WorkflowStatus
from forge.workflows.engine import LocalWorkflowEngine


@dataclass(frozen=True, slots=True)
class Failure:
    """One scripted answer: status, grpc-gateway JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Outage:
    """Fail the next requests of a fake HTTP server, e.g. an Argo Server restarting behind its proxy.

    The test calls ``fail_next(n, status=503, retry_after="1")``; the server's request handler calls
    ``take()`` first on every request and, if it returns a ``Failure``, answers with it instead of
    routing (the request is still recorded). ``failed`` counts the requests answered that way;
    ``remaining`` is how many are still to fail. Thread-safe (the fakes serve from threads).
    """

    remaining: int = 0
    failed: int = 0
    _next: Failure | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(
        self, n: int, *, status: int = 503, retry_after: str | None = "1", message: str = "no healthy upstream"
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self.remaining, self.failed = n, 0
            self._next = Failure(status, {"code": 14, "message": message, "details": []}, headers)  # 14: Unavailable

    def take(self) -> Failure | None:
        with self._lock:
            if self.remaining <= 0 or self._next is None:
                return None
            self.remaining -= 1
            self.failed += 1
            return self._next


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "alpine:3.20", "command": ["sh", "-c"], "args": [script]}, **extra}


def task(name: str, template: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "template": template, **extra}


def workflow_template(
    tasks: list[dict[str, Any]], templates: list[dict[str, Any]], *, dag: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """A WorkflowTemplate whose ``main`` dag runs ``tasks``; ``dag`` adds keys to it (e.g. ``failFast``)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": spec.pop("name", "wt")},
        "spec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "dag": {"tasks": tasks, **(dag or {})}}, *templates],
            **spec,
        },
    }


def logging_template(log: Path, body: str) -> dict[str, Any]:
    """Appends ``start NAME`` / ``end NAME`` around ``body``; NAME is the input parameter."""
    script = f"echo start {{{{inputs.parameters.n}}}} >> {log}; {body}; echo end {{{{inputs.parameters.n}}}} >> {log}"
    return shell("log", script, inputs={"parameters": [{"name": "n"}]})


def log_task(name: str, **extra: Any) -> dict[str, Any]:
    return task(name, "log", arguments={"parameters": [{"name": "n", "value": name}]}, **extra)


def events(log: Path) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in log.read_text().splitlines()]


def max_concurrency(log: Path) -> int:
    running = peak = 0
    for kind, _ in events(log):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}


def phases(status: WorkflowStatus) -> dict[str, NodePhase]:
    return {n: s.phase for n, s in status.nodes.items()}


async def final(engine: LocalWorkflowEngine, name: str) -> WorkflowStatus:
    async with asyncio.timeout(60):
        seen = [s async for s in engine.watch(name)]
    return seen[-1]


async def run(
    engine: LocalWorkflowEngine,
    template: dict[str, Any],
    parameters: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> WorkflowStatus:
    name = await engine.create_template(template)
    workflow = await engine.submit(name, parameters=parameters or {}, labels=labels or {})
    return await final(engine, workflow)

"""``forge run`` as a user runs it: the real CLI starts the embedded platform, runs, and stops it.

A platform that ``forge dev up`` started is someone else's: ``forge run`` reuses it and never stops
it, and when one of its services is down it says which one and leaves every process running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pygit2

from forge.embedded.process import binary, free_port, process_alive

PASSING = "name: ok\nphases:\n  test:\n    steps:\n      - {name: unit, run: 'echo all good'}\n"
FAILING = (
    "name: bad\nphases:\n  check:\n    steps:\n"
    "      - {name: lint, run: 'echo line one; echo the reason it broke; exit 4'}\n"
)


def _git_repo(path: Path, files: dict[str, str]) -> None:
    repo = pygit2.init_repository(str(path), initial_head="main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("t", "t@example.invalid")
    repo.create_commit("HEAD", sig, sig, "init", repo.index.write_tree(), [])


def _forge(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("forge"), *map(str, args), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home)},
    )


def _forge_run(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return _forge("run", path, "--timeout", "120", home=home)


def _sigkill_group(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} survived SIGKILL"
        time.sleep(0.05)


def test_forge_run_exit_codes_and_log_tail(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good, bad, broken = tmp_path / "good", tmp_path / "bad", tmp_path / "broken"
    _git_repo(good, {"ok/.forge/project.yaml": PASSING})
    _git_repo(bad, {"bad/.forge/project.yaml": FAILING})
    _git_repo(broken, {"x/.forge/project.yaml": "name: x\nphases:\n  nope:\n    steps: [{name: a, run: 'true'}]\n"})

    passed = _forge_run(good, home)
    assert passed.returncode == 0, passed.stderr
    assert "run success" in passed.stderr
    assert "no base: all" in passed.stdout

    failed = _forge_run(bad, home)
    assert failed.returncode == 1, failed.stderr
    assert "first failing step: check/bad/lint (exit 4)" in failed.stderr
    assert "the reason it broke" in failed.stderr.split("--- log tail ---")[1]

    invalid = _forge_run(broken, home)
    assert invalid.returncode == 2, invalid.stderr
    assert "x/.forge/project.yaml:3: phases.nope" in invalid.stderr
    assert "Traceback" not in invalid.stderr + failed.stderr + passed.stderr
    assert not (home / "platform.json").exists()  # each run stopped the platform it started


def test_forge_run_never_stops_a_platform_it_did_not_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = tmp_path / "good"
    _git_repo(good, {"ok/.forge/project.yaml": PASSING})
    up = _forge("dev", "up", home=home)
    assert up.returncode == 0, up.stderr
    pids: dict[str, int] = json.loads((home / "platform.json").read_text())["pids"]
    assert set(pids) >= {"nats", "postgres", "s3", "api", "controller", "worker-discovery", "worker-ci"}
    try:
        healthy = _forge("dev", "status", "--json", home=home)
        assert healthy.returncode == 0, healthy.stderr
        assert set(json.loads(healthy.stdout)["health"].values()) == {"ok"}

        passed = _forge_run(good, home)  # reuses the running platform and leaves it running
        assert passed.returncode == 0, passed.stderr
        assert all(process_alive(pid) for pid in pids.values())

        _sigkill_group(pids["postgres"])
        failed = _forge_run(good, home)
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr.startswith(f"forge run: the embedded platform in {home} is unhealthy: postgres ")
        assert "forge dev down" in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr  # one line, no traceback
        survivors = {name: process_alive(pid) for name, pid in pids.items() if name != "postgres"}
        assert all(survivors.values()), survivors
        assert (home / "platform.json").exists()

        unhealthy = _forge("dev", "status", "--json", home=home)
        assert unhealthy.returncode == 1
        health = json.loads(unhealthy.stdout)["health"]
        assert health["postgres"].startswith("is not running"), health
        assert health["nats"] == health["s3"] == "ok", health
        assert "postgres" in unhealthy.stderr

        again = _forge("dev", "up", home=home)  # never replaces a platform that still runs
        assert again.returncode == 1
        assert "unhealthy: postgres" in again.stderr
        assert all(process_alive(pid) for name, pid in pids.items() if name != "postgres")
    finally:
        down = _forge("dev", "down", home=home)
    assert down.returncode == 0, down.stderr
    assert not any(process_alive(pid) for pid in pids.values())
    assert not (home / "platform.json").exists()


def test_a_stale_record_is_replaced_and_a_live_one_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = tmp_path / "good"
    _git_repo(good, {"ok/.forge/project.yaml": PASSING})
    home.mkdir()
    port = free_port()
    with subprocess.Popen(["sleep", "60"], start_new_session=True) as stand_in:  # a "nats" that does not answer
        record = {
            "home": str(home),
            "api_url": f"http://127.0.0.1:{free_port()}",
            "env": {},
            "pids": {"nats": stand_in.pid},
            "services": {"nats": f"127.0.0.1:{port}"},
        }
        (home / "platform.json").write_text(json.dumps(record))
        live = _forge_run(good, home)
        assert live.returncode == 1, live.stderr
        assert f"unhealthy: nats is not answering (127.0.0.1:{port})" in live.stderr
        assert stand_in.poll() is None  # not stopped
        stand_in.kill()

    status = _forge("dev", "status", home=home)
    assert status.returncode == 1
    assert "not running" in status.stderr
    fresh = _forge_run(good, home)  # every recorded process is gone: a new platform, stopped again
    assert fresh.returncode == 0, fresh.stderr
    assert not (home / "platform.json").exists()

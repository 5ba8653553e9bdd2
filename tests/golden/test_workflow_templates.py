"""Golden WorkflowTemplates: the bundled example monorepo and a generated 200-project repo.

The YAML under ``tests/golden/workflow_templates/`` is compared byte for byte; set
``FORGE_UPDATE_GOLDEN=1`` to rewrite it after an intended change (never in CI), then review the
diff. Both repositories are committed with pygit2 at a fixed time, so commit ids are stable.
"""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID, uuid5

import pytest

from forge.adapters.pygit2_git import Pygit2Reader
from forge.discovery import discover
from forge.domain.discovery import DiscoveryResult
from forge.testing.gitrepos import commit_files
from forge.workflows.templates import TemplateSpec, build_template, has_work, to_yaml, validate_workflow_template

_HERE = Path(__file__).parent
_GOLDEN = _HERE / "workflow_templates"
_EXAMPLE = _HERE.parents[1] / "examples" / "monorepo"
_RUN_ID = UUID("0f0f0f0f-1234-5678-9abc-def012345678")


def _spec(result: DiscoveryResult, repository: str) -> TemplateSpec:
    step_ids = {
        (s.phase, p.name, s.name): uuid5(_RUN_ID, f"{s.phase}/{p.name}/{s.name}")
        for p in result.projects
        for s in p.steps
    }
    return TemplateSpec(
        run_id=_RUN_ID,
        repository=repository,
        commit_sha=result.commit,
        branch=result.branch,
        clone_url=f"/var/lib/forge/git/{repository}.git",
        discovery=result,
        step_ids=step_ids,
    )


def _check_golden(name: str, text: str) -> None:
    path = _GOLDEN / name
    if os.environ.get("FORGE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; run with FORGE_UPDATE_GOLDEN=1 to create it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path} differs; run with FORGE_UPDATE_GOLDEN=1 and review the diff"


def _example_files() -> dict[str, str | bytes | None]:
    return {
        str(p.relative_to(_EXAMPLE)): p.read_bytes()
        for p in sorted(_EXAMPLE.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def generated_repo(count: int = 200) -> dict[str, str | bytes | None]:
    """Chains of ``depends_on`` (ten projects each, plus a cross-chain edge every 25 projects),
    five phases in four groups, and a spread of timeouts and retries."""
    files: dict[str, str | bytes | None] = {
        ".forge/repo.yaml": (
            "name: acme/generated\n"
            "phases:\n"
            "  check: {group: 1, timeout: 5m}\n"
            "  build: {group: 1, timeout: 20m}\n"
            "  test: {group: 2, timeout: 30m}\n"
            "  e2e: {group: 3, timeout: 1h}\n"
            "  package: {group: 4}\n"
        )
    }
    for i in range(count):
        name = f"svc-{i:03d}"
        depends = [f"svc-{i - 1:03d}"] if i % 10 else []
        if i % 25 == 24:
            depends.append(f"svc-{i - 17:03d}")
        lines = [f"name: {name}", f"depends_on: [{', '.join(depends)}]", "phases:"]
        lines += ["  check:", "    steps:", "      - {name: lint, run: make lint}"]
        if i % 2 == 0:
            lines += ["  build:", "    steps:", f"      - {{name: compile, earthly: +build, args: [--n, '{i}']}}"]
        if i % 3 != 1:
            timeout = "" if i % 4 else ", timeout: 45m"
            lines += ["  test:", "    steps:", f"      - {{name: unit, run: make test, retries: {i % 3}{timeout}}}"]
            if i % 6 == 0:
                lines += ["      - {name: integration, run: make it, env: {DB: postgres}, secrets: [db-password]}"]
        if i % 20 == 5:
            lines += ["  e2e:", "    steps:", "      - {name: smoke, run: ./smoke.sh, retries: 1}"]
        if i % 7 == 0:
            lines += ["  package:", "    steps:", "      - {name: image, earthly: +docker, timeout: 15m}"]
        files[f"services/{name}/.forge/project.yaml"] = "\n".join(lines) + "\n"
        files[f"services/{name}/main.py"] = f"print({i})\n"
    return files


def _discover(tmp_path: Path, files: dict[str, str | bytes | None]) -> DiscoveryResult:
    repo = tmp_path / "repo.git"
    commit = commit_files(repo, files, "initial")
    return discover(Pygit2Reader(repo), commit, None, branch="main")


@pytest.mark.parametrize(
    ("name", "files", "repository"),
    [
        ("example-monorepo.yaml", _example_files, "example/monorepo"),
        ("generated-200.yaml", generated_repo, "acme/generated"),
    ],
)
def test_golden_template(tmp_path: Path, name: str, files: object, repository: str) -> None:
    assert callable(files)
    result = _discover(tmp_path, files())
    assert has_work(result)
    doc = build_template(_spec(result, result.repository or repository))
    validate_workflow_template(doc)
    _check_golden(name, to_yaml(doc))


def test_generated_repo_shape(tmp_path: Path) -> None:
    result = _discover(tmp_path, generated_repo())
    assert len(result.projects) == len(result.affected) == 200
    doc = build_template(_spec(result, "acme/generated"))
    dags = {t["name"]: t["dag"]["tasks"] for t in doc["spec"]["templates"] if "dag" in t}
    assert [t["name"] for t in dags["main"]] == ["group-1", "group-2", "group-3", "group-4"]
    tasks = sum(len(v) for k, v in dags.items() if k != "main")
    assert tasks == sum(len(p.steps) for p in result.projects)
    edges = sum(
        len(t.get("depends", "").split(" && ")) for k, v in dags.items() if k != "main" for t in v if t.get("depends")
    )
    assert edges < 2 * tasks  # chains and depends_on only; no all-to-all group barriers

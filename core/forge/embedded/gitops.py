"""The embedded GitOps repository: a bare repository under the platform's home (issue 9, item 1).

``forge dev up`` and the e2e platform create it once (``<home>/gitops.git``) and hand its path to
every process as ``FORGE_GITOPS__URL``; later starts reuse it, deployments and all. It is seeded
with one commit holding ``dev/env.yaml``, ``staging/env.yaml`` and ``production/env.yaml``:
Crossplane EnvironmentConfigs with example values (``replicas``, ``domain``, ``log_level``) that
``${{ env.* }}`` expressions of the example projects resolve to.

The seed files are the canonical text ``forge.gitops.models.EnvironmentValues.for_environment``
renders (this layer sits below ``forge.gitops``, so the text is spelled out here; a unit test
keeps the two equal).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

__all__ = ["SEED_ENVIRONMENTS", "SEED_VALUES", "create_gitops_repository"]

SEED_VALUES: Mapping[str, Mapping[str, object]] = {
    "dev": {"replicas": 1, "domain": "dev.forge.localhost", "log_level": "debug"},
    "staging": {"replicas": 2, "domain": "staging.forge.localhost", "log_level": "info"},
    "production": {"replicas": 3, "domain": "forge.localhost", "log_level": "warning"},
}
"""The data of each seeded environment, in the order of ``SEED_ENVIRONMENTS``' files."""

SEED_ENVIRONMENTS: Mapping[str, str] = {
    environment: (
        "apiVersion: apiextensions.crossplane.io/v1beta1\n"
        "kind: EnvironmentConfig\n"
        "metadata:\n"
        f"  name: forge-{environment}\n"
        "  labels:\n"
        f"    forge.projectcatalyst.io/environment: {environment}\n"
        "data:\n" + "".join(f"  {key}: {value}\n" for key, value in values.items())
    )
    for environment, values in SEED_VALUES.items()
}
"""``<env>/env.yaml`` text per environment."""

_SIGNATURE = ("Catalyst Forge", "forge@catalyst.invalid")


def create_gitops_repository(path: Path, *, branch: str = "main") -> str:
    """The bare GitOps repository at ``path``, created and seeded when missing; its absolute path (the URL)."""
    path = path.resolve()
    if (path / "HEAD").exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        repo = pygit2.init_repository(str(staging), bare=True, initial_head=branch)
        root = repo.TreeBuilder()
        for environment, text in SEED_ENVIRONMENTS.items():
            folder = repo.TreeBuilder()
            folder.insert("env.yaml", repo.create_blob(text.encode()), FileMode.BLOB)
            root.insert(environment, folder.write(), FileMode.TREE)
        signature = pygit2.Signature(*_SIGNATURE)
        message = f"seed the environments {', '.join(SEED_ENVIRONMENTS)}\n"
        repo.create_commit(f"refs/heads/{branch}", signature, signature, message, root.write(), [])
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(path)

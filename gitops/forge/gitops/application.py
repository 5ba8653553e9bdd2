"""The Argo CD ``Application`` of one app: ``<env>/applications/<owner>-<repo>-<project>.yaml``.

One app-of-apps per environment (the Application ``forge-<env>`` in ``<env>/app-of-apps.yaml``,
whose source is the directory ``<env>/applications``, written by the writer with the first change
to the environment) deploys every file here; each of them points Argo CD at the app's
directory and renders it with our Config Management Plugin ``forge-release`` version ``v1``
(referenced as ``forge-release-v1``). ``manifest-generate-paths: .;/<env>/env.yaml`` tells Argo CD
that a commit touching the app's directory or the environment's values is the only one that can
change its manifests, so a pointer commit of one app does not refresh all the others.

Sync is automated with prune and self-heal: the CMP never prints an empty stream (it fails
instead), so a bad render cannot prune an app. ``CreateNamespace=true`` creates the destination
namespace, named like the Application (unique per environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from forge.discovery.load import load_config
from forge.errors import InvalidInputError
from forge.gitops._crds import check_crd
from forge.gitops.layout import APPLICATIONS_DIR, AppLocation, environment_root_file
from forge.gitops.models import ANNOTATION_PREFIX, ENVIRONMENT_LABEL, to_yaml

__all__ = [
    "CMP_PLUGIN",
    "GENERATE_PATHS_ANNOTATION",
    "ApplicationDefaults",
    "application_source_path",
    "environment_root_application",
    "render_application",
]

CMP_PLUGIN = "forge-release-v1"
GENERATE_PATHS_ANNOTATION = "argocd.argoproj.io/manifest-generate-paths"
_API_VERSION = "argoproj.io/v1alpha1"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class ApplicationDefaults:
    """What every Application written shares (``GitOpsSettings``: ``argocd_*``, ``destination_server``)."""

    repo_url: str
    branch: str = "main"
    namespace: str = "argocd"
    destination_server: str = "https://kubernetes.default.svc"
    project: str = "default"


def render_application(location: AppLocation, defaults: ApplicationDefaults) -> bytes:
    """The Application's canonical YAML, checked against the Argo CD CRD schema."""
    app = {
        "apiVersion": _API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": location.application_name,
            "namespace": defaults.namespace,
            "labels": {ENVIRONMENT_LABEL: location.environment, f"{ANNOTATION_PREFIX}project": location.project},
            "annotations": {
                GENERATE_PATHS_ANNOTATION: f".;/{location.environment_file}",
                f"{ANNOTATION_PREFIX}repository": location.repository,
            },
        },
        "spec": {
            "project": defaults.project,
            "source": {
                "repoURL": defaults.repo_url,
                "targetRevision": defaults.branch,
                "path": location.app_dir,
                "plugin": {"name": CMP_PLUGIN},
            },
            "destination": {"server": defaults.destination_server, "namespace": location.application_name},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    }
    check_crd(app, location.application_file)
    return to_yaml(app)


def environment_root_application(environment: str, defaults: ApplicationDefaults) -> bytes:
    """The environment's app-of-apps ``forge-<env>``: a directory source over ``<env>/applications``.

    ``GitOpsWriter`` writes it to ``<env>/app-of-apps.yaml`` with the first change it commits to the
    environment; an operator points Argo CD at that one file (docs/gitops.md, "The app-of-apps").
    """
    where = environment_root_file(environment)
    app = {
        "apiVersion": _API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": f"forge-{environment}",
            "namespace": defaults.namespace,
            "labels": {ENVIRONMENT_LABEL: environment},
        },
        "spec": {
            "project": defaults.project,
            "source": {
                "repoURL": defaults.repo_url,
                "targetRevision": defaults.branch,
                "path": f"{environment}/{APPLICATIONS_DIR}",
                "directory": {"recurse": False},
            },
            "destination": {"server": defaults.destination_server, "namespace": defaults.namespace},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }
    check_crd(app, where)
    return to_yaml(app)


def application_source_path(data: bytes, where: str) -> str | None:
    """``spec.source.path`` of an existing Application file (``None`` when it has none)."""
    loaded = load_config(data, _Loose)
    if loaded.config is None:
        raise InvalidInputError(f"{where}: not a YAML mapping: {'; '.join(i.reason for i in loaded.issues)}")
    spec: Any = (loaded.config.model_extra or {}).get("spec")
    source = spec.get("source") if isinstance(spec, dict) else None
    path = source.get("path") if isinstance(source, dict) else None
    return path if isinstance(path, str) else None

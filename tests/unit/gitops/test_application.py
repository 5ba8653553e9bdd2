"""The Argo CD Application of an app: byte-exact, valid against the Argo CD CRD schema, collisions found."""

from __future__ import annotations

import pytest

from forge.errors import InvalidInputError
from forge.gitops._crds import check_crd
from forge.gitops.application import (
    ApplicationDefaults,
    application_source_path,
    environment_root_application,
    render_application,
)
from forge.gitops.layout import AppLocation

DEFAULTS = ApplicationDefaults(repo_url="https://git.example.com/acme/gitops.git")

APPLICATION_YAML = b"""\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: acme-shop-api
  namespace: argocd
  labels:
    forge.projectcatalyst.io/environment: staging
    forge.projectcatalyst.io/project: api
  annotations:
    argocd.argoproj.io/manifest-generate-paths: .;/staging/env.yaml
    forge.projectcatalyst.io/repository: acme/shop
spec:
  project: default
  source:
    repoURL: https://git.example.com/acme/gitops.git
    targetRevision: main
    path: staging/apps/acme/shop/api
    plugin:
      name: forge-release-v1
  destination:
    server: https://kubernetes.default.svc
    namespace: acme-shop-api
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
    - CreateNamespace=true
"""


def test_application_renders_byte_exact() -> None:
    assert render_application(AppLocation("staging", "acme/shop", "api"), DEFAULTS) == APPLICATION_YAML


def test_application_source_path_reads_back_the_app_dir() -> None:
    assert application_source_path(APPLICATION_YAML, "x.yaml") == "staging/apps/acme/shop/api"
    assert application_source_path(b"kind: Application\n", "x.yaml") is None
    with pytest.raises(InvalidInputError, match=r"^x.yaml: not a YAML mapping"):
        application_source_path(b"- 1\n", "x.yaml")


def test_the_schema_check_catches_a_misspelt_field() -> None:
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "x"},
        "spec": {
            "project": "default",
            "destination": {"namespace": "x"},
            "source": {"repoURL": "r", "plugin": {"nmae": "forge-release-v1"}},
            "syncPolicy": {"syncOptions": "CreateNamespace=true"},
        },
    }
    with pytest.raises(InvalidInputError) as info:
        check_crd(app, "dev/applications/x.yaml")
    message = str(info.value)
    assert message.startswith("dev/applications/x.yaml: ")
    assert "spec.source.plugin: Additional properties are not allowed ('nmae' was unexpected)" in message
    assert "spec.syncPolicy.syncOptions: 'CreateNamespace=true' is not of type 'array'" in message


def test_the_environment_app_of_apps_points_at_the_applications_directory() -> None:
    text = environment_root_application("dev", DEFAULTS).decode()
    assert "  name: forge-dev\n" in text
    assert "    path: dev/applications\n" in text
    assert "plugin" not in text

"""Paths and names of the GitOps repository (forge.gitops.layout)."""

from __future__ import annotations

import pytest

from forge.errors import InvalidInputError
from forge.gitops.layout import AppLocation, environment_file


def test_paths_of_an_app() -> None:
    location = AppLocation("dev", "acme/shop", "api")
    assert location.environment_file == "dev/env.yaml"
    assert location.app_dir == "dev/apps/acme/shop/api"
    assert location.pointer_file == "dev/apps/acme/shop/api/release.yaml"
    assert location.project_env_file == "dev/apps/acme/shop/api/env.yaml"
    assert location.application_name == "acme-shop-api"
    assert location.application_file == "dev/applications/acme-shop-api.yaml"
    assert environment_file("production") == "production/env.yaml"


def test_owner_and_repo_are_lower_cased_and_the_application_name_is_a_dns_label() -> None:
    location = AppLocation("staging", "IntersectMBO/My_Repo.js", "web-ui")
    assert location.app_dir == "staging/apps/intersectmbo/my_repo.js/web-ui"
    assert location.application_name == "intersectmbo-my-repo-js-web-ui"
    assert location.application_file == "staging/applications/intersectmbo-my-repo-js-web-ui.yaml"
    assert location.repository == "IntersectMBO/My_Repo.js"  # kept as given for spec.repository


@pytest.mark.parametrize(
    ("environment", "repository", "project", "field"),
    [
        ("Dev", "acme/shop", "api", "environment"),
        ("dev/x", "acme/shop", "api", "environment"),
        ("", "acme/shop", "api", "environment"),
        ("../dev", "acme/shop", "api", "environment"),
        ("dev", "acme", "api", "repository"),
        ("dev", "acme/shop/extra", "api", "repository"),
        ("dev", "../shop", "api", "repository"),
        ("dev", "acme/..", "api", "repository"),
        ("dev", ".git/shop", "api", "repository"),
        ("dev", "acme/shop", "API", "project"),
        ("dev", "acme/shop", "a/b", "project"),
        ("dev", "acme/shop", "1api", "project"),
    ],
)
def test_bad_names_are_refused_naming_the_field(environment: str, repository: str, project: str, field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: "):
        AppLocation(environment, repository, project)


def test_an_application_name_longer_than_a_dns_label_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a DNS label"):
        AppLocation("dev", "a-very-long-organisation-name/a-very-long-repository-name", "a-long-project")


def test_a_project_ending_in_a_dash_cannot_name_an_application() -> None:
    with pytest.raises(InvalidInputError, match="not a DNS label"):
        AppLocation("dev", "acme/shop", "api-")

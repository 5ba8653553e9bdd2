"""Where things live in the GitOps repository (DESIGN §8, docs/gitops.md), with every name checked.

::

    <env>/env.yaml                                        the environment's EnvironmentConfig
    <env>/app-of-apps.yaml                                the environment's app-of-apps (Application forge-<env>)
    <env>/apps/<owner>/<repo>/<project>/release.yaml      the ReleasePointer
    <env>/apps/<owner>/<repo>/<project>/env.yaml          the project's EnvironmentConfig (optional)
    <env>/applications/<owner>-<repo>-<project>.yaml      the Argo CD Application

Owner and repository are lower-cased in paths and names (GitHub names are case-insensitive, and
OCI repository names are lower-case too: ``forge.releases.naming``); the pointer's
``spec.repository`` keeps the spelling it was given. The Application's name joins owner,
repository and project with ``-`` and turns ``_`` and ``.`` into ``-``, because it is also a
Kubernetes object name, a namespace and an Argo CD tracking label value (a DNS label, at most 63
characters). Joining can make two apps collide (``a-b/c`` + ``d`` and ``a/b-c`` + ``d``); the
writer refuses an Application file that already points at another app's path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from forge.errors import InvalidInputError

__all__ = [
    "APPLICATIONS_DIR",
    "APPS_DIR",
    "ENV_FILE",
    "POINTER_FILE",
    "ROOT_APPLICATION_FILE",
    "AppLocation",
    "check_environment",
    "check_project",
    "check_repository",
    "environment_file",
    "environment_root_file",
    "value_error",
]

ENV_FILE = "env.yaml"
POINTER_FILE = "release.yaml"
APPS_DIR = "apps"
APPLICATIONS_DIR = "applications"
ROOT_APPLICATION_FILE = "app-of-apps.yaml"

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")  # environments and projects, as in .forge/*.yaml
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_DNS_LABEL_MAX = 63


def check_environment(environment: str) -> str:
    if not _NAME.match(environment) or len(environment) > _DNS_LABEL_MAX:
        raise InvalidInputError(
            f"environment: {environment!r} is not a name (lower-case letters, digits and '-', starting with a "
            f"letter, at most {_DNS_LABEL_MAX} characters)"
        )
    return environment


def check_project(project: str) -> str:
    if not _NAME.match(project) or len(project) > _DNS_LABEL_MAX:
        raise InvalidInputError(
            f"project: {project!r} is not a project name (lower-case letters, digits and '-', starting with a "
            f"letter, at most {_DNS_LABEL_MAX} characters)"
        )
    return project


def check_repository(repository: str) -> str:
    owner, _, repo = repository.partition("/")
    if not _REPOSITORY.match(repository) or owner.startswith(".") or repo.startswith(".") or ".." in repository:
        raise InvalidInputError(f"repository: {repository!r} is not owner/repo")
    return repository


def value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    """``check`` for a pydantic validator: its ``InvalidInputError`` as the ``ValueError`` pydantic locates."""

    def validate(value: str) -> str:
        try:
            return check(value)
        except InvalidInputError as exc:
            raise ValueError(exc.message.partition(": ")[2]) from None

    return validate


def environment_file(environment: str) -> str:
    """``<env>/env.yaml``: the environment's EnvironmentConfig."""
    return f"{check_environment(environment)}/{ENV_FILE}"


def environment_root_file(environment: str) -> str:
    """``<env>/app-of-apps.yaml``: the environment's app-of-apps, the Application over ``<env>/applications``.

    It lives beside ``env.yaml``, outside the directory it deploys, so the app-of-apps never manages itself.
    """
    return f"{check_environment(environment)}/{ROOT_APPLICATION_FILE}"


@dataclass(frozen=True, slots=True)
class AppLocation:
    """The files of one (environment, repository, project) in the GitOps repository."""

    environment: str
    repository: str
    project: str

    def __post_init__(self) -> None:
        check_environment(self.environment)
        check_repository(self.repository)
        check_project(self.project)
        name = self.application_name
        if len(name) > _DNS_LABEL_MAX or name.endswith("-"):
            raise InvalidInputError(
                f"{self.repository} {self.project}: the Argo CD Application name {name!r} is not a DNS label "
                f"(at most {_DNS_LABEL_MAX} characters); shorten the repository or project name"
            )

    @property
    def owner(self) -> str:
        return self.repository.partition("/")[0].lower()

    @property
    def repo(self) -> str:
        return self.repository.partition("/")[2].lower()

    @property
    def app_dir(self) -> str:
        """``<env>/apps/<owner>/<repo>/<project>``: the Application's source path, the CMP's cwd."""
        return f"{self.environment}/{APPS_DIR}/{self.owner}/{self.repo}/{self.project}"

    @property
    def pointer_file(self) -> str:
        return f"{self.app_dir}/{POINTER_FILE}"

    @property
    def project_env_file(self) -> str:
        return f"{self.app_dir}/{ENV_FILE}"

    @property
    def environment_file(self) -> str:
        return environment_file(self.environment)

    @property
    def environment_root_file(self) -> str:
        return environment_root_file(self.environment)

    @property
    def application_name(self) -> str:
        """``<owner>-<repo>-<project>``, with ``_`` and ``.`` as ``-``."""
        joined = f"{self.owner}-{self.repo}-{self.project}"
        return re.sub(r"[_.]", "-", joined).lstrip("-")

    @property
    def application_file(self) -> str:
        return f"{self.environment}/{APPLICATIONS_DIR}/{self.application_name}.yaml"

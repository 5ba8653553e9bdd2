"""The documents of the GitOps repository, and their one canonical YAML text (docs/gitops.md).

- :class:`ReleasePointer` (``forge.projectcatalyst.io/v1alpha1``): which release of a project an
  environment runs: ``spec.release`` (the released commit, 40 hex) and ``spec.digest`` (the
  Release OCI manifest digest the CMP pulls by), plus who deployed which release number when.
- :class:`EnvironmentValues`: a Crossplane ``EnvironmentConfig``
  (``apiextensions.crossplane.io/v1beta1``) whose top-level ``data`` holds the values
  ``${{ env.* }}`` resolves to. Named ``EnvironmentValues`` here because ``EnvironmentConfig``
  already names the promotion policy of ``.forge/repo.yaml`` (``forge.domain.config``).
- The Argo CD ``Application`` of one app is built by :mod:`forge.gitops.application`.

Rendering is deterministic: block style, keys in model order, no line folding, ASCII (other
characters escaped); the same
document always gives the same bytes, so "already deployed" is a byte comparison and golden
tests pin the format. Parsing goes through ``forge.discovery.load`` (alias budget, depth cap,
errors naming ``file:line: field: reason``): the repository is also edited by people.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from forge.discovery.load import load_config
from forge.errors import InvalidInputError, LimitExceededError
from forge.gitops._crds import check_crd
from forge.gitops.layout import AppLocation, check_environment, check_project, check_repository, value_error

__all__ = [
    "ANNOTATION_PREFIX",
    "ENVIRONMENT_LABEL",
    "MAX_DOCUMENT_BYTES",
    "POINTER_API_VERSION",
    "VALUES_API_VERSION",
    "EnvironmentValues",
    "PointerAnnotations",
    "PointerSpec",
    "ReleasePointer",
    "ValuesMetadata",
    "format_timestamp",
    "parse_document",
    "to_yaml",
]

POINTER_API_VERSION = "forge.projectcatalyst.io/v1alpha1"
VALUES_API_VERSION = "apiextensions.crossplane.io/v1beta1"
ANNOTATION_PREFIX = "forge.projectcatalyst.io/"
ENVIRONMENT_LABEL = f"{ANNOTATION_PREFIX}environment"
MAX_DOCUMENT_BYTES = 256 * 1024
"""Largest pointer or EnvironmentConfig file read or written (values are configuration, not data)."""

_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_K8S_NAME = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"

Commit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Repository = Annotated[str, AfterValidator(value_error(check_repository))]
Project = Annotated[str, AfterValidator(value_error(check_project))]
Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")]
_M = TypeVar("_M", bound=BaseModel)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_yaml(self) -> bytes:
        return to_yaml(self.model_dump(mode="json", by_alias=True, exclude_none=True))


class PointerAnnotations(_Document):
    release_number: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,17}$")] = Field(
        alias=f"{ANNOTATION_PREFIX}release-number", description="The project's release number, as a string"
    )
    deployed_by: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        alias=f"{ANNOTATION_PREFIX}deployed-by", description="Who asked for the deployment"
    )
    deployed_at: Timestamp = Field(alias=f"{ANNOTATION_PREFIX}deployed-at", description="When, UTC, RFC 3339")


class PointerMetadata(_Document):
    name: Project = Field(description="The project")
    annotations: PointerAnnotations


class PointerSpec(_Document):
    repository: Repository = Field(description="owner/repo")
    project: Project
    release: Commit = Field(description="The released commit (40 hex)")
    digest: Digest = Field(description="The Release OCI manifest digest the CMP pulls by")


class ReleasePointer(_Document):
    """``<env>/apps/<owner>/<repo>/<project>/release.yaml``."""

    api_version: Literal["forge.projectcatalyst.io/v1alpha1"] = Field(
        "forge.projectcatalyst.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["ReleasePointer"] = "ReleasePointer"
    metadata: PointerMetadata
    spec: PointerSpec

    @model_validator(mode="after")
    def _name_is_project(self) -> ReleasePointer:
        if self.metadata.name != self.spec.project:
            raise ValueError(f"metadata.name {self.metadata.name!r} differs from spec.project {self.spec.project!r}")
        return self

    @classmethod
    def build(
        cls,
        *,
        repository: str,
        project: str,
        release_number: int,
        commit: str,
        digest: str,
        deployed_by: str,
        deployed_at: datetime,
    ) -> ReleasePointer:
        """A pointer; every field is validated (``InvalidInputError`` naming the field)."""
        if release_number < 1:
            raise InvalidInputError(f"release number must be at least 1, got {release_number}")
        data = {
            "metadata": {
                "name": project,
                "annotations": {
                    f"{ANNOTATION_PREFIX}release-number": str(release_number),
                    f"{ANNOTATION_PREFIX}deployed-by": deployed_by,
                    f"{ANNOTATION_PREFIX}deployed-at": format_timestamp(deployed_at),
                },
            },
            "spec": {"repository": repository, "project": project, "release": commit, "digest": digest},
        }
        return _validated(cls, data, "release pointer")

    @property
    def release_number(self) -> int:
        return int(self.metadata.annotations.release_number)

    @property
    def deployed_by(self) -> str:
        return self.metadata.annotations.deployed_by

    @property
    def deployed_at(self) -> datetime:
        return datetime.strptime(self.metadata.annotations.deployed_at, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


class ValuesMetadata(_Document):
    name: Annotated[str, StringConstraints(pattern=_K8S_NAME)]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] | None = None


class EnvironmentValues(_Document):
    """A Crossplane ``EnvironmentConfig``: ``<env>/env.yaml`` (the environment) or ``<app>/env.yaml`` (a project)."""

    api_version: Literal["apiextensions.crossplane.io/v1beta1"] = Field(
        "apiextensions.crossplane.io/v1beta1", alias="apiVersion"
    )
    kind: Literal["EnvironmentConfig"] = "EnvironmentConfig"
    metadata: ValuesMetadata
    data: dict[str, Any] = Field(default_factory=dict, description="The values; any JSON structure")

    @model_validator(mode="after")
    def _json_data(self) -> EnvironmentValues:
        _check_json(self.data, "data")
        return self

    def to_yaml(self) -> bytes:
        """Canonical YAML, checked against Crossplane's EnvironmentConfig schema."""
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        check_crd(document, f"EnvironmentConfig {self.metadata.name}")
        return to_yaml(document)

    @classmethod
    def for_environment(cls, environment: str, data: Mapping[str, Any]) -> EnvironmentValues:
        """``<env>/env.yaml``, named ``forge-<env>``."""
        check_environment(environment)
        meta = {"name": f"forge-{environment}", "labels": {ENVIRONMENT_LABEL: environment}}
        return _validated(cls, {"metadata": meta, "data": dict(data)}, f"{environment}/env.yaml")

    @classmethod
    def for_project(cls, location: AppLocation, data: Mapping[str, Any]) -> EnvironmentValues:
        """``<app>/env.yaml``, named ``<env>-<application name>`` (EnvironmentConfigs are cluster-scoped)."""
        meta = {
            "name": f"{location.environment}-{location.application_name}",
            "labels": {ENVIRONMENT_LABEL: location.environment, f"{ANNOTATION_PREFIX}project": location.project},
        }
        return _validated(cls, {"metadata": meta, "data": dict(data)}, location.project_env_file)


def format_timestamp(moment: datetime) -> str:
    """``2025-01-31T12:00:00Z``: UTC to the second (a naive datetime is refused)."""
    if moment.tzinfo is None:
        raise InvalidInputError("deployed-at must be an aware datetime")
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def to_yaml(document: Mapping[str, Any]) -> bytes:
    """The canonical YAML text of a plain document (block style, given key order, no folding, ASCII)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 1 << 20
    yaml.allow_unicode = False  # escaped, non-ASCII survives a round trip (ruamel writes NEL and U+2028 bare)
    buffer = io.StringIO()
    yaml.dump(dict(document), buffer)
    data = buffer.getvalue().encode()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LimitExceededError(f"the rendered document is {len(data)} bytes, over {MAX_DOCUMENT_BYTES}")
    return data


def parse_document(data: bytes, model: type[_M], path: str) -> _M:
    """Parse and validate one file of the repository; ``InvalidInputError`` names ``path:line: field: reason``."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LimitExceededError(f"{path}: {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}")
    loaded = load_config(data, model)
    if loaded.config is None:
        issues = "; ".join(
            f"{path}:{issue.line}: {issue.field + ': ' if issue.field else ''}{issue.reason}"
            if issue.line is not None
            else f"{path}: {issue.reason}"
            for issue in loaded.issues
        )
        raise InvalidInputError(issues, details={"path": path})
    return model.model_validate(_typed(data))


def _typed(data: bytes) -> Any:
    """The document with YAML's own types, from text ``load_config`` has already checked (budget, depth).

    ``load_config`` turns booleans into integers (``false`` becomes ``0``, harmless for its
    typed config models, wrong for free-form values), so the values come from a safe load.
    """
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(data.decode("utf-8"))


def _validated(model: type[_M], data: Mapping[str, Any], what: str) -> _M:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"{what}: {where}: {first['msg'].removeprefix('Value error, ')}") from exc


def _check_json(value: Any, where: str) -> None:
    """Values must survive JSON: string keys, finite numbers, no other objects."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {json.dumps(key, default=str)}")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a JSON number")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")

"""Strict validation of core Kubernetes kinds with kubernetes-validate's bundled schemas.

``kubernetes_validate.validate`` stops at its best error and cannot tell a wrong value from a
``${{ env.* }}`` placeholder the CMP fills in later. So this module loads the same files
(``kubernetes-json-schema/v<version>-local-strict/``: ``additionalProperties: false`` everywhere)
with the same jsonschema validator, iterates *all* errors and drops exactly those whose instance
is a string that is one whole env expression (``replicas: ${{ env.replicas }}`` fails ``type:
integer``, an enum or a nested object's shape only because its value is not known yet). Typed
placeholders taken from the schema were the alternative; they need a walk of ``$ref``/``oneOf``
per field and still guess values for enums and patterns, while dropping errors is exact.

An object has a schema only when a bundled file matches its kind and the file's ``apiVersion``
enum holds the object's ``apiVersion`` exactly: kubernetes-validate strips the group's domain
(``apps.example.com/v1`` would find ``apps/v1``), which would validate a custom resource against a
core schema. Validators are cached per (version, file); ``_definitions.json`` (1.2 MB) loads once,
and jsonschema is imported on first use so that the CMP, which never validates, starts faster.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from forge.errors import InvalidInputError
from forge.releases.expressions import format_location, is_env_expression

if TYPE_CHECKING:
    import jsonschema
    from referencing import Registry

__all__ = ["KUBERNETES_VERSION", "SchemaProblem", "has_schema", "schema_problems"]

KUBERNETES_VERSION = "1.30"
"""The Kubernetes minor version whose schemas rendering validates against."""

_GROUP_DOMAIN = re.compile(r"^([^./]*)(?:\.[^/]*)?/")
SchemaProblem = tuple[str, str]
"""``(field, reason)``: ``spec.replicas``, ``'x' is not of type 'integer'``."""


def has_schema(api_version: str, kind: str, version: str = KUBERNETES_VERSION) -> bool:
    """True when ``kind`` in ``api_version`` is a core kind validated strictly."""
    return _validator(version, api_version, kind) is not None


def schema_problems(obj: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> list[SchemaProblem] | None:
    """Every schema violation of ``obj`` except env placeholders, sorted by field; ``None`` when
    the kind has no bundled schema (a custom resource, accepted unvalidated)."""
    validator = _validator(version, str(obj["apiVersion"]), str(obj["kind"]))
    if validator is None:
        return None
    problems: set[SchemaProblem] = set()
    for error in validator.iter_errors(obj):
        if is_env_expression(error.instance):
            continue
        problems.add(_describe(error))
    return sorted(problems)


def _describe(error: jsonschema.ValidationError) -> SchemaProblem:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        if extra:
            return format_location((*path, extra[0])), "unknown field"
    return format_location(path) or "(object)", error.message


@functools.lru_cache(maxsize=256)
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    import jsonschema
    from referencing import Resource

    group_version = _GROUP_DOMAIN.sub(r"\1-", api_version)
    name = f"{kind.lower()}-{group_version}.json"
    if "/" in name or name.startswith("_"):
        return None
    schema_file = _schema_dir(version) / name
    if not schema_file.is_file():
        return None
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    properties = schema.get("properties", {})
    if api_version not in properties.get("apiVersion", {}).get("enum", ()):
        return None
    if kind not in properties.get("kind", {}).get("enum", ()):
        return None
    registry: Registry[Any] = Resource.from_contents(schema) @ _definitions(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.lru_cache(maxsize=4)
def _definitions(version: str) -> Registry[Any]:
    from referencing import Registry, Resource

    contents = json.loads((_schema_dir(version) / "_definitions.json").read_text(encoding="utf-8"))
    return Resource.from_contents(contents) @ Registry()


def _schema_dir(version: str) -> Any:
    directory = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    if not directory.is_dir():
        raise InvalidInputError(f"kubernetes-validate bundles no schemas for Kubernetes {version}")
    return directory

"""Render ``deploy.resources`` into the objects a release carries (issue 8, item 4).

Rules, in the order they are checked (the first violation is the error, one line naming
``deploy.resources[i]``, the kind and name when known, and the field):

1. artifact expressions resolve (:func:`~forge.releases.expressions.resolve_artifacts`); env
   expressions stay for the CMP;
2. the canonical rendered size (UTF-8 bytes of the objects as compact JSON with sorted keys, the
   size that does not depend on YAML layout) is at most ``max_bytes``, else LimitExceededError;
3. every object is a mapping with string ``apiVersion`` and ``kind`` (no expression in either:
   they choose the schema and the file name) and a ``metadata`` mapping with a string ``name``;
   ``metadata.namespace``, when given, is a string;
4. no two objects share (API group, kind, namespace, name): Argo CD would apply one over the other;
5. core kinds validate strictly against the pinned Kubernetes version, tolerating whole
   ``${{ env.* }}`` values (:mod:`forge.releases.schemas`); kinds without a bundled schema
   (custom resources) are accepted unvalidated and logged; :func:`unvalidated_resources` names them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from forge.errors import InvalidInputError, LimitExceededError
from forge.releases.expressions import resolve_artifacts
from forge.releases.schemas import KUBERNETES_VERSION, has_schema, schema_problems

__all__ = ["MAX_RENDERED_BYTES", "canonical_size", "render_resources", "unvalidated_resources"]

MAX_RENDERED_BYTES = 1_048_576
_log = logging.getLogger(__name__)


def render_resources(
    resources: Sequence[Mapping[str, Any]],
    artifact_values: Mapping[str, Mapping[str, str]],
    *,
    max_bytes: int = MAX_RENDERED_BYTES,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[dict[str, Any]]:
    """The release's objects, in the order of ``deploy.resources``; the input is not mutated."""
    objects = resolve_artifacts(resources, artifact_values)
    size = canonical_size(objects)
    if size > max_bytes:
        raise LimitExceededError(
            f"deploy.resources: the rendered resources are {size} bytes, over the limit of {max_bytes} bytes",
            details={"size": size, "limit": max_bytes},
        )
    seen: dict[tuple[str, str, str, str], int] = {}
    for index, obj in enumerate(objects):
        api_version, kind, namespace, name = _identity(index, obj)
        where = f"deploy.resources[{index}] ({kind} {name})"
        key = (api_version.rpartition("/")[0], kind, namespace, name)
        if key in seen:
            scope = f" in namespace {namespace}" if namespace else ""
            raise InvalidInputError(
                f"{where}: metadata.name: duplicate of deploy.resources[{seen[key]}] (same group, kind{scope} and name)"
            )
        seen[key] = index
        problems = schema_problems(obj, kubernetes_version)
        if problems is None:
            _log.info("%s: no bundled schema for %s %s; accepted unvalidated", where, api_version, kind)
        elif problems:
            field, reason = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidInputError(
                f"{where}: {field}: {reason}{more} (Kubernetes {kubernetes_version} schema)",
                details={"problems": [{"field": f, "reason": r} for f, r in problems]},
            )
    return objects


def unvalidated_resources(
    objects: Sequence[Mapping[str, Any]], kubernetes_version: str = KUBERNETES_VERSION
) -> list[str]:
    """``<apiVersion> <kind> <name>`` of rendered objects that no bundled schema validated."""
    return [
        f"{o['apiVersion']} {o['kind']} {o['metadata']['name']}"
        for o in objects
        if not has_schema(o["apiVersion"], o["kind"], kubernetes_version)
    ]


def canonical_size(objects: Sequence[Any]) -> int:
    """UTF-8 bytes of ``objects`` as compact JSON with sorted keys: the size the cap applies to."""
    try:
        text = json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"deploy.resources: not representable as JSON: {exc}") from None
    return len(text.encode("utf-8"))


def _identity(index: int, obj: Any) -> tuple[str, str, str, str]:
    where = f"deploy.resources[{index}]"
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"{where}: must be a mapping (a Kubernetes object), got {type(obj).__name__}")
    for field in ("apiVersion", "kind"):
        value = obj.get(field)
        if value is None:
            raise InvalidInputError(f"{where}: missing {field}")
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{where}: {field}: must be a non-empty string")
        if "${{" in value:
            raise InvalidInputError(f"{where}: {field}: expressions are not allowed here")
    kind = obj["kind"]
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"{where} ({kind}): missing metadata.name")
    name = metadata.get("name")
    if name is None:
        raise InvalidInputError(f"{where} ({kind}): missing metadata.name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where} ({kind}): metadata.name: must be a non-empty string")
    namespace = metadata.get("namespace", "")
    if not isinstance(namespace, str):
        raise InvalidInputError(f"{where} ({kind} {name}): metadata.namespace: must be a string")
    return obj["apiVersion"], kind, namespace, name

"""Objects + values → the YAML stream Argo CD applies.

The release's objects get the environment's values (``forge.releases.resolve_env``: a scalar
that is exactly one ``${{ env.<path> }}`` takes the value with its type, an expression inside a
longer string is interpolated, an unknown path is an error), are checked again (a value could
have replaced a name) and sorted by (kind, metadata.name), then namespace and apiVersion so that
equal pairs still print in one order. Two objects with the same API group, kind, namespace and
name are refused: Argo CD would apply one over the other.

Each document is printed as JSON (sorted keys, two-space indent) after ``---``. JSON is YAML,
every value has one spelling (``"yes"`` and ``"1.10"`` stay strings for any reader), and the
stdlib writes it fast. The project's EnvironmentConfig, when present, comes last, as read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from forge.errors import InvalidInputError

__all__ = ["emit", "render_objects"]


def render_objects(objects: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The objects with env expressions resolved, checked and sorted."""
    from forge.releases.expressions import resolve_env

    resolved: list[dict[str, Any]] = resolve_env(objects, values)
    seen: dict[tuple[str, str, str, str], int] = {}
    for index, obj in enumerate(resolved):
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        namespace = metadata.get("namespace", "") if isinstance(metadata, Mapping) else ""
        if not isinstance(name, str) or not name or not isinstance(namespace, str | None):
            raise InvalidInputError(
                f"{obj.get('kind')} #{index + 1}: metadata.name/namespace is not a string once values are resolved"
            )
        key = (str(obj["apiVersion"]).rpartition("/")[0], str(obj["kind"]), namespace or "", name)
        if key in seen:
            where = f" in namespace {namespace}" if namespace else ""
            raise InvalidInputError(f"two objects are {obj['kind']} {name}{where} (same API group): refusing both")
        seen[key] = index
    return sorted(resolved, key=_order)


def emit(documents: Sequence[Mapping[str, Any]]) -> bytes:
    """A YAML stream of JSON documents."""
    parts: list[str] = []
    for document in documents:
        try:
            text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{document.get('kind')}: not representable as YAML/JSON ({exc})") from None
        parts.append(f"---\n{text}\n")
    return "".join(parts).encode("utf-8")


def _order(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj["metadata"]
    return str(obj["kind"]), metadata["name"], metadata.get("namespace") or "", str(obj["apiVersion"])

"""EnvironmentConfig files and the merge of their ``data`` (DESIGN §8).

``<root>/<env>/env.yaml`` holds the environment's values, ``<app dir>/env.yaml`` the project's;
both are Crossplane ``EnvironmentConfig`` objects (``apiextensions.crossplane.io/v1beta1``) with
the values under top-level ``data``. The project's win:

- two mappings merge key by key, recursively;
- a list or a scalar replaces what was there (lists are not concatenated: an override must be
  able to shrink a list);
- ``null`` deletes the key (and a null in the environment's own file means "no value").

The inputs are never mutated; the result shares no node with them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from forge.errors import InvalidInputError

__all__ = ["API_VERSION", "KIND", "config_data", "merge_values"]

API_VERSION = "apiextensions.crossplane.io/v1beta1"
KIND = "EnvironmentConfig"


def config_data(documents: list[Any], where: str, *, named: bool) -> dict[str, Any]:
    """The ``data`` of the one EnvironmentConfig in ``documents`` (``{}`` without ``data``).

    ``named``: ``metadata.name`` is required (the project's config is printed and applied).
    """
    if len(documents) != 1:
        raise InvalidInputError(f"{where}: must hold exactly one EnvironmentConfig, found {len(documents)} documents")
    document = documents[0]
    if not isinstance(document, Mapping):
        raise InvalidInputError(f"{where}: must be a mapping (an EnvironmentConfig)")
    if document.get("apiVersion") != API_VERSION:
        raise InvalidInputError(f"{where}: apiVersion: expected {API_VERSION}, got {document.get('apiVersion')!r}")
    if document.get("kind") != KIND:
        raise InvalidInputError(f"{where}: kind: expected {KIND}, got {document.get('kind')!r}")
    metadata = document.get("metadata")
    if named and (not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str)):
        raise InvalidInputError(f"{where}: metadata.name: missing or not a string")
    data = document.get("data", {})
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{where}: data: must be a mapping, got {type(data).__name__}")
    return dict(data)


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """``layers`` merged left to right (later wins) by the rules of the module docstring."""
    result: dict[str, Any] = {}
    for layer in layers:
        result = _merge(result, layer)
    return result


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merge(result[key], value)
        elif isinstance(value, Mapping):
            result[key] = _merge({}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result

"""Multi-document YAML (JSON first) from untrusted bytes, as plain trees or a refusal.

A JSON text (the release worker writes every entry as one JSON object, see
``forge.releases.pack``) is read with :func:`json.loads`: no YAML import, no alias to fear. Anything
else goes through ruamel.yaml's safe loader (YAML 1.2), imported on first use. A YAML alias is a
pointer, so ``&a [*b, *b, …]`` chains (the "billion laughs") cost nothing to load and everything
to print; every document is therefore copied into a fresh plain tree while counting nodes as they
would be printed, and refused past ``max_nodes`` (a recursive alias is refused outright).

The copy keeps only what a Kubernetes object can hold: string keys, strings, integers, finite
floats, booleans and null. A timestamp scalar (``2024-01-01``, which ruamel types as a date) is
printed back as its ISO text, as Go's YAML reader would have kept it a string; binary, sets and
non-string keys are refused, so what is printed is exactly what was read.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from forge.errors import InvalidInputError, LimitExceededError

__all__ = ["MAX_NODES", "load_documents"]

MAX_NODES = 2_000_000
"""Nodes (mappings, lists and scalars, aliases expanded) one call may produce."""


def load_documents(data: bytes, where: str, *, max_nodes: int = MAX_NODES) -> list[Any]:
    """Every document of ``data`` as a plain tree; empty documents (``---`` alone, comments) are dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith(("{", "[")):
        parsed = _json(text)
        if parsed is not None:
            return [parsed[0]]
    return [doc for doc in _yaml(text, where, max_nodes) if doc is not None]


def _json(text: str) -> tuple[Any] | None:
    """``(value,)`` when ``text`` is one JSON value, else None (YAML gets its turn)."""
    try:
        return (json.loads(text, object_pairs_hook=_json_object, parse_constant=_no_constant),)
    except (ValueError, RecursionError):
        return None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")  # YAML's reader names the key
    return result


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _yaml(text: str, where: str, max_nodes: int) -> list[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    loader = YAML(typ="safe", pure=True)
    try:
        loaded = list(loader.load_all(text))
    except YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise InvalidInputError(f"{where}: not valid YAML: {reason[:300]}") from None
    except RecursionError:
        raise InvalidInputError(f"{where}: nested too deeply") from None
    budget = _Budget(max_nodes, where)
    try:
        return [_plain(doc, budget, set()) for doc in loaded]
    except RecursionError:
        raise InvalidInputError(f"{where}: nested too deeply") from None


class _Budget:
    def __init__(self, limit: int, where: str) -> None:
        self.left = limit
        self.limit = limit
        self.where = where

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise LimitExceededError(
                f"{self.where}: more than {self.limit} nodes once YAML aliases are expanded (an alias bomb?)"
            )


def _plain(node: Any, budget: _Budget, active: set[int]) -> Any:
    budget.take()
    if node is None or isinstance(node, bool | int | str):
        return node
    if isinstance(node, float):
        if not math.isfinite(node):
            raise InvalidInputError(f"{budget.where}: {node} is not a value a Kubernetes object can hold")
        return node
    if isinstance(node, datetime.date):
        return node.isoformat()
    if isinstance(node, dict | list):
        if id(node) in active:
            raise InvalidInputError(f"{budget.where}: a YAML alias refers to a node that contains it")
        active.add(id(node))
        try:
            if isinstance(node, list):
                return [_plain(item, budget, active) for item in node]
            result: dict[str, Any] = {}
            for key, value in node.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{budget.where}: mapping key {key!r} is not a string")
                result[key] = _plain(value, budget, active)
            return result
        finally:
            active.discard(id(node))
    raise InvalidInputError(f"{budget.where}: a {type(node).__name__} value is not allowed (only plain YAML)")

"""Argo's simple ``{{...}}`` template tags, substituted in strings anywhere inside a template.

Supported tags: ``inputs.parameters.<name>``, ``workflow.parameters.<name>``, ``workflow.name``,
``workflow.namespace``, ``workflow.labels.<name>``, ``workflow.uid``, ``retries`` and
``tasks.<task>.outputs.result`` / ``tasks.<task>.exitCode``. Whitespace inside the braces is
ignored, as in Argo. Expression tags (``{{=...}}``) and unknown tags are errors: a local run
must never execute a command with an unresolved tag in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from forge.errors import InvalidInputError

__all__ = ["substitute", "substitute_tree"]

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def substitute(text: str, scope: Mapping[str, str], *, where: str) -> str:
    """``text`` with every tag replaced from ``scope``; ``InvalidInputError`` naming ``where`` otherwise."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key.startswith("="):
            raise InvalidInputError(f"{where}: expression tags like {match.group(0)!r} are not supported locally")
        try:
            return scope[key]
        except KeyError:
            raise InvalidInputError(f"{where}: failed to resolve {match.group(0)}") from None

    return _TAG.sub(replace, text)


def substitute_tree(value: Any, scope: Mapping[str, str], *, where: str) -> Any:
    """Substitute in every string of a JSON-like tree (keys untouched); returns a new tree."""
    if isinstance(value, str):
        return substitute(value, scope, where=where)
    if isinstance(value, Mapping):
        return {k: substitute_tree(v, scope, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute_tree(v, scope, where=f"{where}[{i}]") for i, v in enumerate(value)]
    return value

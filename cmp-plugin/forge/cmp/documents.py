"""Multi-document YAML (JSON first) from untrusted bytes, as plain trees or a refusal.

A JSON text (the release worker writes every entry as one JSON object, see
``forge.releases.pack``) is read with :func:`json.loads`: no YAML import, no alias to fear. Plain
block YAML (what the GitOps writer writes: ``release.yaml`` and the ``env.yaml`` files) is read by
:func:`_block`, a reader of a strict subset that answers only when it is sure to give ruamel's
answer (block mappings and sequences, one-line scalars whose type is unambiguous, ``{}``/``[]``)
and else declines. Anything else goes through ruamel.yaml's safe loader (YAML 1.2), imported on
first use (~20 ms of a render's start, and ~5 ms per small file to parse). A YAML alias is a
pointer, so ``&a [*b, *b, …]`` chains (the "billion laughs") cost nothing to load and everything
to print; every document is therefore copied into a fresh plain tree while counting nodes as they
would be printed, and refused past ``max_nodes`` (a recursive alias is refused outright).

The copy keeps only what a Kubernetes object can hold: string keys, strings, integers, finite
floats, booleans and null. A timestamp scalar (``2024-01-01``, which ruamel types as a date) is
printed back as its ISO text, as Go's YAML reader would have kept it a string; binary, sets and
non-string keys are refused, so what is printed is exactly what was read.
"""

from __future__ import annotations

import json
import math
import re
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
    block = _block(text, max_nodes)
    if block is not None:
        return [block[0]]
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


# The plain-block reader: everything it does not know declines (None) and ruamel reads the text.
_SPECIAL = frozenset("\t\r#&*!|>%`\\")  # comments, anchors, aliases, tags, block scalars, directives, escapes
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@+=,~-]*(?: [A-Za-z0-9_./:@+=,~-]+)*")
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
# A digit-led plain scalar is a string when no YAML 1.2 int (0b/0o/0x, digits), float (digits, e/E)
# or timestamp (dddd-d…) can match it: it holds a letter other than e/E and no such prefix.
_DIGIT_LED = re.compile(r"[0-9][A-Za-z0-9_./@+=,~-]*")
_LETTER_NOT_E = re.compile(r"[A-DF-Za-df-z]")
_NUMBER_PREFIX = re.compile(r"0[BOXbox]|[0-9]{4}-")
_CONSTANTS: dict[str, Any] = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_CONSTANTS |= {"FALSE": False, "null": None, "Null": None, "NULL": None, "~": None, "{}": {}, "[]": []}
_AMBIGUOUS = frozenset({"y", "n", "yes", "no", "on", "off"})  # YAML 1.1 booleans: let ruamel decide


class _DeclinedError(Exception):
    """Not in the subset :func:`_block` reads."""


def _block(text: str, max_nodes: int) -> tuple[Any] | None:
    """``(document,)`` when ``text`` is one document of plain block YAML, else None."""
    if _SPECIAL.intersection(text):
        return None
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.split("\n")):
        content = raw.rstrip(" ")
        if content.strip():
            if number == 0 and content == "---":
                continue
            lines.append((len(content) - len(content.lstrip(" ")), content.lstrip(" ")))
    if not lines or lines[0][0] != 0:
        return None
    try:
        document, end = _node(lines, 0, 0)
        if end != len(lines) or _count(document) > max_nodes:
            return None
    except (_DeclinedError, RecursionError):
        return None
    return (document,)


def _node(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    if lines[start][1] == "-" or lines[start][1].startswith("- "):
        return _sequence(lines, start, indent)
    return _mapping(lines, start, indent)


def _mapping(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    index = start
    while index < len(lines) and lines[index][0] == indent:
        content = lines[index][1]
        if content.startswith("-"):
            raise _DeclinedError
        key, colon, rest = content.partition(":")
        if not colon or (rest and not rest.startswith(" ")):
            raise _DeclinedError  # "a:b" is a plain scalar, not a key
        key = _key(key)
        if key in result:
            raise _DeclinedError  # ruamel names the duplicate key
        index += 1
        rest = rest.strip()
        if rest:
            result[key] = _scalar(rest)
        elif index < len(lines) and lines[index][0] > indent:
            result[key], index = _node(lines, index, lines[index][0])
        elif index < len(lines) and lines[index][0] == indent and lines[index][1].startswith("- "):
            result[key], index = _sequence(lines, index, indent)  # a sequence may sit at its key's indent
        else:
            raise _DeclinedError  # "key:" alone is null; rare enough to leave to ruamel
    if index < len(lines) and lines[index][0] > indent:
        raise _DeclinedError
    return result, index


def _sequence(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[list[Any], int]:
    result: list[Any] = []
    index = start
    while index < len(lines) and lines[index][0] == indent and lines[index][1].startswith("- "):
        item = lines[index][1][2:]
        column = indent + 2 + len(item) - len(item.lstrip(" "))
        item = item.lstrip(" ")
        if item.startswith("-") or not item:
            raise _DeclinedError
        _, colon, rest = item.partition(":")
        if colon and (not rest or rest.startswith(" ")):  # "- key: value": a mapping starting on the dash's line
            lines[index] = (column, item)
            value, index = _mapping(lines, index, column)
            result.append(value)
        else:
            result.append(_scalar(item))
            index += 1
    if index < len(lines) and lines[index][0] > indent:
        raise _DeclinedError
    return result, index


def _key(text: str) -> str:
    if text.startswith("'"):
        value = _scalar(text)
        if isinstance(value, str):
            return value
    elif _KEY.fullmatch(text) and text not in _CONSTANTS and text.lower() not in _AMBIGUOUS:
        return text
    raise _DeclinedError


def _scalar(text: str) -> Any:
    if text in _CONSTANTS:
        return {} if text == "{}" else [] if text == "[]" else _CONSTANTS[text]  # a new {} or [] each time
    if text.startswith("'"):
        inner = text[1:-1]
        if len(text) < 2 or not text.endswith("'") or "'" in inner.replace("''", ""):
            raise _DeclinedError
        return inner.replace("''", "'")
    if text.startswith('"'):
        inner = text[1:-1]
        if len(text) < 2 or not text.endswith('"') or '"' in inner:
            raise _DeclinedError
        return inner
    if _INT.fullmatch(text):
        return int(text)
    if _DIGIT_LED.fullmatch(text) and _LETTER_NOT_E.search(text) and not _NUMBER_PREFIX.match(text):
        return text  # a commit sha, "4f1c…", "500m", "1x"
    if _PLAIN.fullmatch(text) and ": " not in text and not text.endswith(":") and text.lower() not in _AMBIGUOUS:
        return text
    raise _DeclinedError


def _count(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_count(value) for value in node.values())
    if isinstance(node, list):
        return 1 + sum(_count(value) for value in node)
    return 1


def _yaml(text: str, where: str, max_nodes: int) -> list[Any]:
    import datetime

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
    budget = _Budget(max_nodes, where, datetime.date)
    try:
        return [_plain(doc, budget, set()) for doc in loaded]
    except RecursionError:
        raise InvalidInputError(f"{where}: nested too deeply") from None


class _Budget:
    def __init__(self, limit: int, where: str, date: Any) -> None:
        self.left = limit
        self.limit = limit
        self.where = where
        self.date = date  # datetime.date, imported with ruamel (the fast paths need neither)

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
    if isinstance(node, budget.date):
        return str(node.isoformat())
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

"""Parse one config file with ruamel.yaml and validate it with pydantic, keeping line numbers.

Untrusted input: the caller checks the blob size first; here anchors and aliases are expanded
against a node budget (an alias bomb stops after ``NODE_BUDGET`` nodes), nesting is capped at
``MAX_DEPTH``, recursive aliases and non-mapping documents are refused. Every pydantic error
becomes an issue at the line of the offending key (or of its parent when the key is missing).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

__all__ = ["MAX_DEPTH", "NODE_BUDGET", "Issue", "Loaded", "load_config"]

NODE_BUDGET = 100_000
MAX_DEPTH = 64
M = TypeVar("M", bound=BaseModel)
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem in one file, before the file's path is attached."""

    line: int | None
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Loaded(Generic[M]):
    """The outcome of loading one blob; cached by blob id, so it never names its path."""

    config: M | None
    issues: tuple[Issue, ...] = ()
    lines: Mapping[str, int] = field(default_factory=dict)
    raw_name: str | None = None

    def line(self, key: str) -> int | None:
        """Line of a dotted key (``depends_on.0``, ``artifacts.image.publishers.1``), else of its nearest
        ancestor that has one."""
        while key:
            found = self.lines.get(key)
            if found is not None:
                return found
            key = key.rpartition(".")[0]
        return None


class _BudgetError(Exception):
    pass


_local = threading.local()


def _yaml() -> YAML:
    parser: YAML | None = getattr(_local, "yaml", None)
    if parser is None:
        parser = YAML(typ="rt")
        _local.yaml = parser
    return parser


def load_config(data: bytes, model: type[M]) -> Loaded[M]:
    """Parse and validate one config file; a :class:`Loaded` holds the model or every issue."""
    document = _parse(data)
    if isinstance(document, Issue):
        return Loaded(None, (document,))
    root_line = (document.lc.line or 0) + 1
    try:
        plain = _plain(document, [NODE_BUDGET], 0, set())
    except _BudgetError as exc:
        return Loaded(None, (Issue(root_line, "", str(exc)),))
    raw_name = plain.get("name") if isinstance(plain.get("name"), str) else None
    lines = _key_lines(document)
    try:
        config = model.model_validate(plain)
    except ValidationError as exc:
        issues = tuple(
            Issue(_line_of(document, err["loc"], root_line), _dotted(err["loc"]), _reason(err["msg"]))
            for err in exc.errors(include_url=False)
        )
        return Loaded(None, issues, lines, raw_name)
    return Loaded(config, (), lines, raw_name)


def _decode(data: bytes) -> str | Issue:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Issue(None, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")
    too_deep = _flow_too_deep(text)
    if too_deep is not None:
        return Issue(too_deep, "", f"the document nests deeper than {MAX_DEPTH} levels")
    return text


def _parse(data: bytes) -> CommentedMap | Issue:
    text = _decode(data)
    if isinstance(text, Issue):
        return text
    try:
        document = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return Issue(mark.line + 1 if mark is not None else None, "", f"invalid YAML: {reason}")
    except YAMLError as exc:
        return Issue(None, "", f"invalid YAML: {exc}")
    except RecursionError:
        return Issue(None, "", "invalid YAML: nested too deeply")
    if document is None or isinstance(document, CommentedMap):
        return document if document is not None else CommentedMap()
    kind = "a list" if isinstance(document, list) else f"a {type(document).__name__}"
    return Issue(1, "", f"the document must be a mapping, got {kind}")


def _flow_too_deep(text: str) -> int | None:
    """Line where ``[``/``{`` nesting passes ``MAX_DEPTH`` (ruamel's scanner is quadratic in it).

    Brackets inside quoted or block scalars count too: a real config never holds 64 more
    opening brackets than closing ones, and the scan must stay linear.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_DEPTH:
            return text.count("\n", 0, match.start()) + 1
    return None


def _plain(node: Any, budget: list[int], depth: int, active: set[int]) -> Any:
    """Plain dicts/lists/scalars of a ruamel document, expanding aliases within the budget."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _BudgetError(f"the document expands to more than {NODE_BUDGET} nodes (anchors and aliases?)")
    if depth > MAX_DEPTH:
        raise _BudgetError(f"the document nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, dict | list):
        if id(node) in active:
            raise _BudgetError("the document refers to itself through an alias")
        active.add(id(node))
        try:
            if isinstance(node, dict):
                return {_scalar(k): _plain(v, budget, depth + 1, active) for k, v in node.items()}
            return [_plain(v, budget, depth + 1, active) for v in node]
        finally:
            active.discard(id(node))
    return _scalar(node)


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarString, ScalarInt, ...) as the plain built-in types."""
    if type(value) in (bool, int, float, str):  # already plain (a bool is an int: never turn False into 0)
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind) and type(value) is not kind:
            return kind(value)
    return value


def _key_lines(document: CommentedMap) -> dict[str, int]:
    """Line of every key and list item, by dotted path (``deploy.resources.0.spec.replicas``)."""
    lines: dict[str, int] = {}
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, CommentedMap):
            children: Any = node.items()
        elif isinstance(node, CommentedSeq):
            children = enumerate(node)
        else:
            continue
        for key, value in children:
            path = f"{prefix}{key}"
            position = node.lc.data.get(key)
            if position is not None:
                lines[path] = position[0] + 1
            stack.append((f"{path}.", value))
    return lines


def _line_of(document: CommentedMap, loc: tuple[int | str, ...], line: int) -> int:
    """Line of the deepest key of ``loc`` present in the document; parts pydantic adds are skipped."""
    node: Any = document
    for part in loc:
        in_map = isinstance(node, CommentedMap) and part in node
        in_seq = isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_map or in_seq):
            continue
        position = node.lc.data.get(part)
        if position is not None:
            line = position[0] + 1
        node = node[part]
    return line


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")

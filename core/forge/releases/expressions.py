"""The ``${{ ... }}`` language of ``deploy.resources`` (DESIGN §3), in two stages.

Grammar, inside any string value (never in mapping keys: keys are the shape of an object, and an
object whose shape depends on a value could not be validated or identified at release time)::

    ${{ artifacts.<name>.<field> }}   resolved when the release is rendered (field: ARTIFACT_FIELDS)
    ${{ env.<segment>[.<segment>…] }} left byte-identical in the release; the CMP resolves it
    $${{                              a literal "${{" (kept in the release, unescaped by the CMP)

``<name>`` is an artifact name (``[a-z][a-z0-9-]*``); a ``<segment>`` is ``[A-Za-z0-9_-]+``.
Spaces inside the braces are optional. Anything else after ``${{`` is an error, so a typo
never reaches a cluster as literal text.

Two stages because artifact digests are known when the release is built, environment values only
when it is deployed: :func:`resolve_artifacts` runs in the release worker, :func:`resolve_env` in
the CMP. In :func:`resolve_env` a string that is exactly one expression takes the value with its
type (``replicas: ${{ env.replicas }}`` becomes an int); an expression inside a longer string is
stringified (strings as they are, everything else as compact JSON: ``true``, ``3``, ``null``,
``{"a":1}``). Substituted values are never scanned again.

Errors name the location as a readable path, ``deploy.resources[0].spec.template.spec.
containers[0].image``; :class:`Reference` also carries it as a tuple for line lookups.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from forge.errors import InvalidInputError

__all__ = [
    "ARTIFACT_FIELDS",
    "Reference",
    "artifact_fields",
    "artifact_references",
    "check_references",
    "format_location",
    "is_env_expression",
    "resolve_artifacts",
    "resolve_env",
    "tracking_tag",
]

ARTIFACT_FIELDS: tuple[str, ...] = ("ref", "digest", "url", "repository", "tag")
"""``ref`` image reference by digest; ``digest`` ``sha256:…``; ``url`` where to fetch it;
``repository`` the OCI repository; ``tag`` the ``sha-<40hex>`` tracking tag (docs/releases.md)."""

Path = tuple[str | int, ...]
_ROOT: Path = ("deploy", "resources")
_TOKEN = re.compile(r"\$\$\{\{|\$\{\{(?P<body>.*?)\}\}|\$\{\{", re.DOTALL)
_ARTIFACT_NAME = re.compile(r"[a-z][a-z0-9-]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OPEN = "${{"


class Reference(NamedTuple):  # a NamedTuple, not a dataclass: forge-cmp imports this module, dataclasses costs ~15 ms
    """One ``${{ artifacts.<artifact>.<field> }}`` found in ``deploy.resources``."""

    artifact: str
    field: str
    location: str
    path: Path = ()


class _Expr(NamedTuple):
    kind: Literal["artifacts", "env", "escape"]
    names: tuple[str, ...]
    text: str
    start: int
    end: int


class _MalformedError(Exception):
    pass


def tracking_tag(commit_sha: str) -> str:
    """The tag of tracking images and releases: ``sha-<40hex>``."""
    return f"sha-{commit_sha}"


def artifact_fields(repository: str, digest: str, commit_sha: str, *, url: str | None = None) -> dict[str, str]:
    """The values of one artifact's fields, as the release worker passes them to rendering.

    ``url`` is the first publisher's location when it is not an OCI registry (an S3 object URL);
    for OCI it is the pullable reference by digest, the one URL every registry understands.
    """
    ref = f"{repository}@{digest}"
    return {"ref": ref, "digest": digest, "url": url or ref, "repository": repository, "tag": tracking_tag(commit_sha)}


def format_location(path: Path) -> str:
    """``("deploy", "resources", 0, "spec")`` → ``deploy.resources[0].spec``; odd keys as ``["a/b"]``."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            parts.append(f".{part}" if parts else part)
        else:
            parts.append(f"[{json.dumps(part)}]")
    return "".join(parts)


def is_env_expression(value: object) -> bool:
    """True when ``value`` is a string that is exactly one ``${{ env.… }}`` expression."""
    if not isinstance(value, str) or not value.startswith(_OPEN):
        return False
    try:
        tokens = _scan(value)
    except _MalformedError:
        return False
    return len(tokens) == 1 and tokens[0].kind == "env" and tokens[0].start == 0 and tokens[0].end == len(value)


def artifact_references(resources: Sequence[Any]) -> list[Reference]:
    """Every well-formed artifact expression, in document order (malformed ones are skipped:
    :func:`check_references` reports them)."""
    found: list[Reference] = []
    for path, text in _strings(resources):
        try:
            tokens = _scan(text)
        except _MalformedError:
            continue
        full = _ROOT + path
        found.extend(
            Reference(t.names[0], t.names[1], format_location(full), full) for t in tokens if t.kind == "artifacts"
        )
    return found


def check_references(resources: Sequence[Any], artifacts: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(location, reason)`` for every malformed expression, key expression, unknown artifact or field."""
    problems: list[tuple[str, str]] = []
    declared = ", ".join(sorted(artifacts)) or "none"
    for path, key in _keys(resources):
        if _OPEN in key:
            problems.append((format_location(_ROOT + path), f"expressions are not allowed in mapping keys: {key!r}"))
    for path, text in _strings(resources):
        location = format_location(_ROOT + path)
        try:
            tokens = _scan(text)
        except _MalformedError as exc:
            problems.append((location, str(exc)))
            continue
        for token in tokens:
            if token.kind != "artifacts":
                continue
            name, field = token.names
            if name not in artifacts:
                problems.append(
                    (location, f"unknown artifact {name!r} in {token.text}; the project declares: {declared}")
                )
            elif field not in ARTIFACT_FIELDS:
                fields = ", ".join(ARTIFACT_FIELDS)
                problems.append((location, f"unknown field {field!r} in {token.text}; artifact fields: {fields}"))
    return problems


def resolve_artifacts(resources: Sequence[Any], values: Mapping[str, Mapping[str, str]]) -> list[Any]:
    """A copy of ``resources`` with every artifact expression replaced by ``values[name][field]``.

    Env expressions and ``$${{`` escapes stay byte-identical; the input is never mutated. A value
    that itself holds ``${{`` is refused, so the CMP can never read an artifact value as an
    expression. Running it twice gives the same result as once.
    """

    def substitute(path: Path, text: str) -> Any:
        tokens = _tokens_or_raise(path, text)
        if not any(t.kind == "artifacts" for t in tokens):
            return text
        out: list[str] = []
        last = 0
        for token in tokens:
            out.append(text[last : token.start])
            out.append(_artifact_value(path, token, values) if token.kind == "artifacts" else token.text)
            last = token.end
        out.append(text[last:])
        return "".join(out)

    return [_transform(item, (index,), substitute) for index, item in enumerate(resources)]


def resolve_env(resources: Sequence[Any], values: Mapping[str, Any]) -> list[Any]:
    """A copy of ``resources`` with every env expression resolved against ``values`` (the merged
    EnvironmentConfig ``data``) and ``$${{`` unescaped; an artifact expression left over is an error."""

    def substitute(path: Path, text: str) -> Any:
        tokens = _tokens_or_raise(path, text)
        if not tokens:
            return text
        for token in tokens:
            if token.kind == "artifacts":
                raise InvalidInputError(f"{format_location(_ROOT + path)}: unresolved artifact reference {token.text}")
        whole = tokens[0]
        if len(tokens) == 1 and whole.kind == "env" and whole.start == 0 and whole.end == len(text):
            return copy.deepcopy(_env_value(path, whole, values))
        out: list[str] = []
        last = 0
        for token in tokens:
            out.append(text[last : token.start])
            out.append(_OPEN if token.kind == "escape" else _stringify(_env_value(path, token, values)))
            last = token.end
        out.append(text[last:])
        return "".join(out)

    return [_transform(item, (index,), substitute) for index, item in enumerate(resources)]


def _scan(text: str) -> list[_Expr]:
    """The expressions and escapes of one string, in order; raises on the first malformed one."""
    if _OPEN not in text:
        return []
    tokens: list[_Expr] = []
    for match in _TOKEN.finditer(text):
        raw = match.group()
        if raw == "$" + _OPEN:
            tokens.append(_Expr("escape", (), raw, match.start(), match.end()))
            continue
        body = match.group("body")
        if body is None:
            raise _MalformedError("unclosed expression: '${{' without a closing '}}'")
        tokens.append(_parse(body, raw, match.start(), match.end()))
    return tokens


def _parse(body: str, raw: str, start: int, end: int) -> _Expr:
    parts = body.strip().split(".")
    root = parts[0]
    if root == "artifacts":
        if len(parts) != 3 or not _ARTIFACT_NAME.fullmatch(parts[1]) or not _SEGMENT.fullmatch(parts[2]):
            raise _MalformedError(f"malformed expression {raw}: expected ${{{{ artifacts.<name>.<field> }}}}")
        return _Expr("artifacts", (parts[1], parts[2]), raw, start, end)
    if root == "env":
        if len(parts) < 2 or not all(_SEGMENT.fullmatch(p) for p in parts[1:]):
            raise _MalformedError(f"malformed expression {raw}: expected ${{{{ env.<path> }}}}")
        return _Expr("env", tuple(parts[1:]), raw, start, end)
    if not body.strip():
        raise _MalformedError(f"empty expression {raw}")
    raise _MalformedError(
        f"malformed expression {raw}: expected ${{{{ artifacts.<name>.<field> }}}} or ${{{{ env.<path> }}}}"
    )


def _tokens_or_raise(path: Path, text: str) -> list[_Expr]:
    try:
        return _scan(text)
    except _MalformedError as exc:
        raise InvalidInputError(f"{format_location(_ROOT + path)}: {exc}") from None


def _artifact_value(path: Path, token: _Expr, values: Mapping[str, Mapping[str, str]]) -> str:
    name, field = token.names
    value = values.get(name, {}).get(field)
    location = format_location(_ROOT + path)
    if value is None:
        known = ", ".join(sorted(values)) or "none"
        what = "artifact" if name not in values else "field of artifact"
        raise InvalidInputError(f"{location}: unknown {what} in {token.text} (artifacts with values: {known})")
    if _OPEN in value:
        raise InvalidInputError(f"{location}: the value of {token.text} contains '${{{{'")
    return value


def _env_value(path: Path, token: _Expr, values: Mapping[str, Any]) -> Any:
    node: Any = values
    for depth, name in enumerate(token.names):
        if not isinstance(node, Mapping) or name not in node:
            dotted = ".".join(("env", *token.names))
            missing = ".".join(("env", *token.names[: depth + 1]))
            location = format_location(_ROOT + path)
            raise InvalidInputError(f"{location}: {token.text}: no value for {dotted} (missing {missing})")
        node = node[name]
    return node


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _transform(node: Any, path: Path, substitute: Callable[[Path, str], Any]) -> Any:
    """A new tree with ``substitute`` applied to every string value; keys holding ``${{`` refused."""
    if isinstance(node, str):
        return substitute(path, node)
    if isinstance(node, Mapping):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            if isinstance(key, str) and _OPEN in key:
                location = format_location(_ROOT + path)
                raise InvalidInputError(f"{location}: expressions are not allowed in mapping keys: {key!r}")
            result[key] = _transform(value, (*path, key), substitute)
        return result
    if isinstance(node, list | tuple):
        return [_transform(value, (*path, index), substitute) for index, value in enumerate(node)]
    return node


def _strings(resources: Sequence[Any]) -> Iterator[tuple[Path, str]]:
    for path, node in _walk(resources):
        if isinstance(node, str):
            yield path, node


def _keys(resources: Sequence[Any]) -> Iterator[tuple[Path, str]]:
    for path, node in _walk(resources):
        if isinstance(node, Mapping):
            yield from ((path, key) for key in node if isinstance(key, str))


def _walk(resources: Sequence[Any]) -> Iterator[tuple[Path, Any]]:
    stack: list[tuple[Path, Any]] = [((index,), item) for index, item in reversed(list(enumerate(resources)))]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, Mapping):
            stack.extend(((*path, k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list | tuple):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))

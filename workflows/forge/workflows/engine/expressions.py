"""Argo's DAG ``depends`` expressions (enhanced depends logic) and the legacy ``dependencies`` list.

Grammar (what Argo documents; ``expr`` operators beyond these are rejected with a clear error)::

    expr  := and ('||' and)*
    and   := unary ('&&' unary)*
    unary := '!' unary | '(' expr ')' | TASK ['.' RESULT]
    RESULT in Succeeded Failed Errored Skipped Omitted Daemoned

A bare ``TASK`` means ``(TASK.Succeeded || TASK.Skipped || TASK.Daemoned)``, widened by the
task's ``continueOn`` (``failed`` adds ``.Failed``, ``error`` adds ``.Errored``) exactly as Argo
expands ``dependencies``. ``.AnySucceeded``/``.AllFailed`` only apply to ``withItems`` groups,
which the local engine does not run, so they are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from forge.errors import InvalidInputError
from forge.ports.engine import NodePhase

__all__ = ["And", "Expr", "Not", "Or", "Ref", "from_dependencies", "parse_depends"]

_RESULTS = {
    "Succeeded": NodePhase.SUCCEEDED,
    "Failed": NodePhase.FAILED,
    "Errored": NodePhase.ERROR,
    "Skipped": NodePhase.SKIPPED,
    "Omitted": NodePhase.OMITTED,
    "Daemoned": None,  # no daemon containers run locally: always false
}
_TOKEN = re.compile(r"\s*(?:(\|\|)|(&&)|(!)|(\()|(\))|([A-Za-z0-9_][A-Za-z0-9_-]*)(?:\.([A-Za-z]+))?)")


@dataclass(frozen=True, slots=True)
class Ref:
    task: str
    result: str | None = None  # None: the bare-name meaning


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


Expr = Ref | Not | And | Or


def refs(expr: Expr) -> Iterable[Ref]:
    """Every task reference in the expression, in order."""
    if isinstance(expr, Ref):
        yield expr
    elif isinstance(expr, Not):
        yield from refs(expr.operand)
    else:
        for operand in expr.operands:
            yield from refs(operand)


def evaluate(expr: Expr, phases: Mapping[str, NodePhase], continue_on: Callable[[str], set[NodePhase]]) -> bool:
    """The expression's value once every referenced task is fulfilled."""
    if isinstance(expr, Ref):
        phase = phases[expr.task]
        if expr.result is None:
            return phase in {NodePhase.SUCCEEDED, NodePhase.SKIPPED} | continue_on(expr.task)
        return _RESULTS[expr.result] == phase
    if isinstance(expr, Not):
        return not evaluate(expr.operand, phases, continue_on)
    if isinstance(expr, And):
        return all(evaluate(o, phases, continue_on) for o in expr.operands)
    return any(evaluate(o, phases, continue_on) for o in expr.operands)


def from_dependencies(names: Iterable[str]) -> Expr | None:
    """``dependencies: [A, B]`` is ``depends: "A && B"``."""
    operands = tuple(Ref(n) for n in names)
    if not operands:
        return None
    return operands[0] if len(operands) == 1 else And(operands)


def parse_depends(text: str, *, where: str) -> Expr:
    """Parse a ``depends`` expression; ``InvalidInputError`` naming ``where`` and the position."""
    tokens = _tokenize(text, where)
    parser = _Parser(tokens, text, where)
    expr = parser.parse_or()
    if parser.pos != len(tokens):
        raise parser.error("expected '&&', '||' or ')' before", tokens[parser.pos][1])
    return expr


def _tokenize(text: str, where: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise InvalidInputError(
                f"{where}: unsupported syntax in depends {text!r} at {text[pos:].strip()!r}: the local engine "
                "understands task names, .Succeeded/.Failed/.Errored/.Skipped/.Omitted/.Daemoned, "
                "&&, ||, ! and parentheses"
            )
        kinds = ("||", "&&", "!", "(", ")")
        for index, kind in enumerate(kinds, start=1):
            if match.group(index):
                tokens.append((kind, kind))
                break
        else:
            name, result = match.group(6), match.group(7)
            if result is not None and result not in _RESULTS:
                raise InvalidInputError(
                    f"{where}: depends {text!r}: unsupported task result '.{result}' "
                    f"(supported: {', '.join('.' + r for r in _RESULTS)})"
                )
            tokens.append(("ref", f"{name}.{result}" if result else name))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str, where: str):
        self.tokens, self.text, self.where, self.pos = tokens, text, where, 0

    def error(self, what: str, token: str) -> InvalidInputError:
        return InvalidInputError(f"{self.where}: invalid depends {self.text!r}: {what} {token!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.peek() == "||":
            self.pos += 1
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_unary()]
        while self.peek() == "&&":
            self.pos += 1
            operands.append(self.parse_unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_unary(self) -> Expr:
        kind = self.peek()
        if kind is None:
            raise self.error("unexpected end of expression after", self.text.strip()[-10:])
        token = self.tokens[self.pos][1]
        self.pos += 1
        if kind == "!":
            return Not(self.parse_unary())
        if kind == "(":
            inner = self.parse_or()
            if self.peek() != ")":
                raise self.error("missing ')' in", self.text)
            self.pos += 1
            return inner
        if kind == "ref":
            name, _, result = token.partition(".")
            return Ref(name, result or None)
        raise self.error("unexpected", token)

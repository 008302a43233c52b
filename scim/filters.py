"""SCIM filters and paths (RFC 7644 §3.4.2.2, §3.5.2): parsed with scim2-filter-parser into one
small typed AST, which `scim.sql` compiles to SQL and `matches` evaluates on a resource's JSON.

scim2-filter-parser 0.7.0 needs three corrections, made here rather than worked around elsewhere:
its lexer takes one-digit numbers only and does not unescape strings (we lex JSON numbers and
strings), and its parser gives `and` and `or` the same precedence, so `a or b and c` parses as
`(a or b) and c` (we re-associate un-parenthesised chains, `and` binding tighter, §3.4.2.2).
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from scim2_filter_parser import ast as lib
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser

from bridge.identifiers import fold
from scim.errors import InvalidFilter, InvalidPath

OPERATORS = {"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"}
MAX_FILTER = 4096
MAX_NESTING = 32  # parentheses and brackets: the parser and the compilers recurse per level


class _Lexer(SCIMLexer):  # type: ignore[misc]
    tokens = SCIMLexer.tokens

    @_(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # type: ignore[name-defined]  # noqa: F821
    def NUMBER(self, t: Any) -> Any:
        t.value = json.loads(t.value)
        return t

    @_(r'"(?:[^"\\]|\\.)*"')  # type: ignore[name-defined]  # noqa: F821
    def COMP_VALUE(self, t: Any) -> Any:
        t.value = json.loads(t.value)
        return t

    # Typed values, so that "true" (a string) and true (a boolean) stay apart in the AST.
    @_(r"true(?![\w$-])")  # type: ignore[name-defined]  # noqa: F821
    def TRUE(self, t: Any) -> Any:
        t.value = True
        return t

    @_(r"false(?![\w$-])")  # type: ignore[name-defined]  # noqa: F821
    def FALSE(self, t: Any) -> Any:
        t.value = False
        return t

    @_(r"null(?![\w$-])")  # type: ignore[name-defined]  # noqa: F821
    def NULL(self, t: Any) -> Any:
        t.value = None
        return t


@dataclass(frozen=True)
class Path:
    """attrPath: an optional schema URN, an attribute, an optional sub-attribute."""

    attr: str
    sub: str | None = None
    urn: str | None = None

    def __str__(self) -> str:
        head = f"{self.urn}:{self.attr}" if self.urn else self.attr
        return f"{head}.{self.sub}" if self.sub else head


@dataclass(frozen=True)
class Compare:
    path: Path
    op: str
    value: Any = None


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class ValuePath:
    """attr[filter]: some value of the multi-valued `path` satisfies `filter`."""

    path: Path
    filter: Expr


Expr = Compare | And | Or | Not | ValuePath


def parse(text: str) -> Expr:
    """A filter expression, or InvalidFilter naming what is wrong.

    Parsed once per shape: a filter's tree depends on where its quoted strings are, not on
    what they say (the lexer makes each one token, whatever it holds), and the library's
    parse cost about a tenth of a filtered GET's CPU. So the filter is parsed with its i-th
    string replaced by a hole (`"\u0001i"`), that tree is kept (_shaped, a bounded cache: an
    IdP sends a handful of shapes, `userName eq "..."` above all) and the strings are put back
    into the holes, decoded and checked as the lexer and _check_values do. Whatever that does
    not answer cleanly (a shape that does not parse, a string JSON does not decode or that
    holds what no database compares) is parsed in full, which raises the refusal it always
    raised, with its own words and positions."""
    if len(text) > MAX_FILTER:
        raise InvalidFilter(f"the filter is longer than {MAX_FILTER} characters")
    _check_text(text)
    strings = _STRING.findall(text)
    holes = iter(range(len(strings)))
    try:
        tree = _shaped(_STRING.sub(lambda _m: f'"\\u0001{next(holes)}"', text))
        values = [json.loads(raw) for raw in strings]
        for value in values:
            _check_chars(value)
        return _filled(tree, values)
    except (InvalidFilter, ValueError):
        return _convert(_tree(text))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string, as _Lexer.COMP_VALUE reads it
_HOLE = "\x01"


@functools.lru_cache(maxsize=256)
def _shaped(shape: str) -> Expr:
    return _convert(_tree(shape))


def _filled(expr: Expr, values: list[Any]) -> Expr:
    """`expr` (a shape's tree) with each hole's string: every string in a shape's tree is one."""
    if isinstance(expr, Compare):
        value = expr.value
        if isinstance(value, str):
            if not value.startswith(_HOLE):
                raise ValueError(f"{value!r} is no hole")
            return replace(expr, value=values[int(value[1:])])
        return expr
    if isinstance(expr, And | Or):
        return replace(expr, left=_filled(expr.left, values), right=_filled(expr.right, values))
    if isinstance(expr, Not):
        return Not(_filled(expr.expr, values))
    return replace(expr, filter=_filled(expr.filter, values))


def _tree(text: str) -> Any:
    if len(text) > MAX_FILTER:
        raise InvalidFilter(f"the filter is longer than {MAX_FILTER} characters")
    _check_text(text)
    try:
        tree = SCIMParser().parse(_Lexer().tokenize(text))
    except Exception as exc:  # the library raises bare exceptions of several kinds
        raise InvalidFilter(f"cannot parse filter {text!r}: {_why(exc)}") from exc
    _check_values(tree)
    return tree


def _check_text(text: str) -> None:
    """Refuse what no database can compare (NUL, lone surrogates) and nesting past MAX_NESTING."""
    _check_chars(text)
    depth = 0
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', text):  # outside quoted strings
        if char in "([":
            depth += 1
            if depth > MAX_NESTING:
                raise InvalidFilter(f"the filter nests deeper than {MAX_NESTING} levels")
        elif char in ")]":
            depth -= 1


def _check_chars(text: str) -> None:
    if "\x00" in text:
        raise InvalidFilter("a filter may not contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFilter("the filter contains a lone surrogate (not valid Unicode)") from None


def _check_values(tree: Any) -> None:
    """Escaped values (`"\\u0000"`) are decoded by the lexer: check them once decoded."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            _check_chars(node)
        elif isinstance(node, lib.AST):
            stack.extend(getattr(node, name) for name in node._fields)


def _why(exc: Exception) -> str:
    token = re.search(r"Token\(type='(\w+)', value=(.*?), lineno=\d+, index=(\d+)", str(exc))
    if token:
        return f"unexpected {token.group(2)} at position {int(token.group(3)) + 1}"
    if str(exc).endswith("None"):
        return "it ends too early"
    return str(exc)


@dataclass(frozen=True)
class PatchPath:
    """A PATCH target: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub` (§3.5.2)."""

    path: Path
    filter: Expr | None = None


@functools.lru_cache(maxsize=256)
def parse_path(text: str, urns: tuple[str, ...]) -> PatchPath:
    """A PATCH path, or InvalidPath. `urns` are the resource's schema URNs (a path may be one).
    Kept once parsed (an IdP's PATCHes name a handful of paths, `title`, `emails[type eq
    "work"].value`, `members`...): the answer is immutable, and a refusal is not kept."""
    stripped = text.strip()
    for urn in urns:
        if stripped.lower() == urn.lower():
            return PatchPath(Path(attr="", urn=urn))
    try:
        tree = _tree(f"{stripped} pr")  # the library parses paths as the left side of `pr`
    except InvalidFilter as exc:
        raise InvalidPath(f"invalid path {text!r}") from exc
    node = tree.expr
    if tree.namespace is not None or tree.negated or not isinstance(node, lib.AttrExpr):
        raise InvalidPath(f"invalid path {text!r}")
    holder = node.attr_path.attr_name
    if isinstance(holder, lib.Filter):  # attr[filter] or attr[filter].sub
        outer = _path(holder.namespace)
        return PatchPath(Path(outer.attr, outer.sub, outer.urn), _convert(holder.expr))
    return PatchPath(_path(node.attr_path))


def _convert(node: Any) -> Expr:
    if isinstance(node, lib.Filter):
        if node.namespace is not None:  # valuePath: attr[filter]
            inner = _convert(node.expr)
            path = _path(node.namespace)
            return ValuePath(Path(path.attr, None, path.urn), inner)
        if isinstance(node.expr, lib.LogExpr):
            return _reassociate(node)
        inner = _convert(node.expr)
        return Not(inner) if node.negated else inner
    if isinstance(node, lib.AttrExpr):
        return _compare(node)
    raise InvalidFilter(f"unexpected filter element {type(node).__name__}")


def _reassociate(node: lib.Filter) -> Expr:
    """Rebuild a flat `x op y op z` chain so that `and` binds tighter than `or`."""
    operands: list[Expr] = []
    ops: list[str] = []
    current: Any = node
    while (
        isinstance(current, lib.Filter)
        and current.namespace is None
        and not current.negated
        and isinstance(current.expr, lib.LogExpr)
    ):
        operands.append(_convert(current.expr.expr2))
        ops.append(current.expr.op.lower())
        current = current.expr.expr1
    operands.append(_convert(current))
    operands.reverse()
    ops.reverse()
    disjuncts: list[Expr] = [operands[0]]
    for op, operand in zip(ops, operands[1:], strict=True):
        if op == "and":
            disjuncts[-1] = And(disjuncts[-1], operand)
        else:
            disjuncts.append(operand)
    result = disjuncts[0]
    for operand in disjuncts[1:]:
        result = Or(result, operand)
    return result


def _compare(node: lib.AttrExpr) -> Expr:
    op = node.value.lower()
    if op not in OPERATORS:
        raise InvalidFilter(f"the operator {node.value!r} is not supported")
    value = None if node.comp_value is None else node.comp_value.value
    attr_path = node.attr_path
    if isinstance(attr_path.attr_name, lib.Filter):  # emails[type eq "work"].value eq "x"
        holder = attr_path.attr_name
        outer = _path(holder.namespace)
        sub = holder.namespace.sub_attr
        inner = _convert(holder.expr)
        if sub is None:
            raise InvalidFilter("a value path must name a sub-attribute to compare")
        compare = Compare(Path(sub.value), op, value)
        return ValuePath(Path(outer.attr, None, outer.urn), And(inner, compare))
    return Compare(_path(attr_path), op, value)


def _path(node: lib.AttrPath) -> Path:
    sub = node.sub_attr.value if node.sub_attr is not None else None
    return Path(str(node.attr_name), sub, node.uri)


Getter = Callable[[Any, Path], list[Any]]
# How an attribute compares: its kind ("string", "boolean", "dateTime", "id") and caseExact.
Describe = Callable[[Path], tuple[str, bool]]


def matches(expr: Expr, resource: Any, get: Getter, describe: Describe) -> bool:
    """Evaluate `expr` on one resource (or one multi-valued entry) in Python.

    `get` resolves a path to the list of values present; `describe` says how they compare.
    This is the reference the SQL compiler (scim.sql) must agree with, and what PATCH value
    filters use. Absent values match nothing but `eq null`; every result is true or false.
    """
    if isinstance(expr, And):
        return matches(expr.left, resource, get, describe) and matches(
            expr.right, resource, get, describe
        )
    if isinstance(expr, Or):
        return matches(expr.left, resource, get, describe) or matches(
            expr.right, resource, get, describe
        )
    if isinstance(expr, Not):
        return not matches(expr.expr, resource, get, describe)
    if isinstance(expr, ValuePath):
        return any(
            matches(expr.filter, entry, get, describe)
            for entry in get(resource, expr.path)
            if isinstance(entry, dict)
        )
    kind, case_exact = describe(expr.path)
    values = [v for v in get(resource, expr.path) if v is not None and v != ""]
    if expr.value is None and expr.op in ("eq", "ne"):  # `eq null`: absent; `ne null`: present
        return bool(values) == (expr.op == "ne")
    return any(compare(v, expr.op, expr.value, kind, case_exact) for v in values)


def compare(actual: Any, op: str, expected: Any, kind: str, case_exact: bool) -> bool:
    """One comparison of a present value, with the same meaning as the SQL it compiles to."""
    if op == "pr":
        return True
    if expected is None:
        return False
    if kind == "boolean":
        wanted = expected if isinstance(expected, bool) else str(expected).lower() == "true"
        return (actual == wanted) if op == "eq" else (op == "ne" and actual != wanted)
    if kind == "dateTime":
        return _ordered(_instant(actual), op, _instant(expected))
    if kind == "id":
        try:
            same = uuid.UUID(str(actual)) == uuid.UUID(str(expected))
        except ValueError:
            same = False
        return same if op == "eq" else (op == "ne" and not same)
    a = str(actual)
    e = ("true" if expected else "false") if isinstance(expected, bool) else str(expected)
    if not case_exact:  # the one identifier rule (RFC 8265), as the key columns hold it
        a, e = fold(a), fold(e)
    if op == "co":
        return e in a
    if op == "sw":
        return a.startswith(e)
    if op == "ew":
        return a.endswith(e)
    return _ordered(a, op, e)


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))  # Python 3.11+ reads "Z"
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ordered(a: Any, op: str, e: Any) -> bool:
    return {
        "eq": a == e,
        "ne": a != e,
        "gt": a > e,
        "ge": a >= e,
        "lt": a < e,
        "le": a <= e,
    }.get(op, False)

"""Conditions of a rule: checks on one input, combined with all/any/not, explained as they run.

A multi-valued input matches when any of its values matches. `equals` and `contains` both mean
"some value equals the operand" (`contains` reads better for lists like groups); neither ever
matches a substring, so group `cld-admins-old` never passes `contains: cld-admins`. Use `glob`
or `matches` (full-match regex) for patterns.

Case: checks on groups, email, email_domain and userName ignore case (casefold) by default; all
other inputs (department, title, idp, source, declared ones) compare exactly. A declared input
may set `ignore_case` for all its checks and any single check may set `ignore_case: true|false`.

Patterns are checked when the file loads: no quantifier or alternation inside a repeated group
(`(a+)+`, `(a|a)*`) and at most MAX_VARIABLE_REPEATS variable quantifiers. `matches` then runs on
RE2 (google-re2), whose time is linear in the value whatever the pattern (`.*-.*-.*-admins` over
1 KB values was cubic on Python's backtracking engine); a pattern RE2 cannot run (lookaround,
backreferences) is refused at load. At evaluation a value longer than MAX_MATCH_LENGTH is an
InputError for the rule rather than a mismatch, so that a `not:` around a pattern can never turn
an oversized value into access.
"""

from __future__ import annotations

import fnmatch
import functools
import re

# No public API exposes a pattern's parse tree; re._parser is CPython's own (3.11+).
import re._parser as _sre  # type: ignore[import-not-found]
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import re2

OPERATORS: tuple[str, ...] = ("equals", "in", "contains", "matches", "glob", "present", "absent")
MAX_MATCH_LENGTH = 1024
MAX_VARIABLE_REPEATS = 3
_SHOWN_VALUES = 5
_SHOWN_CHARS = 80

Lookup = Callable[[str], tuple[str, ...]]


class Matcher(Protocol):
    """A compiled pattern (Python's re for globs, RE2 for `matches`)."""

    def fullmatch(self, text: str) -> object | None: ...


class InputError(Exception):
    """An input this profile cannot be evaluated on (wrong type, too long for a pattern)."""


@dataclass(frozen=True)
class Check:
    """One input tested by one operator; `keys` holds the operands as compared (folded or not)."""

    input: str
    op: str
    operands: tuple[str, ...]
    ignore_case: bool
    keys: frozenset[str] = frozenset()
    pattern: Matcher | None = None
    text: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self._describe())

    def _describe(self) -> str:
        """The check as a person reads it: `groups contains 'cld-admins'`."""
        if self.op in ("present", "absent"):
            return f"{self.input} {self.op}"
        operand = repr(list(self.operands)) if self.op == "in" else repr(self.operands[0])
        return f"{self.input} {self.op} {operand}"


@dataclass(frozen=True)
class AllOf:
    """Every condition holds (evaluated in order, stopping at the first that fails)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """Some condition holds (evaluated in order, stopping at the first that holds)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """The condition does not hold."""

    item: Condition


Condition = Check | AllOf | AnyOf | Not


def make_check(input_name: str, op: str, operands: tuple[str, ...], ignore_case: bool) -> Check:
    """A compiled check; raises ValueError with a reason for an unsafe or invalid pattern."""
    fold = _folder(ignore_case)
    pattern = None
    if op == "matches":
        pattern = compile_regex(operands[0], ignore_case)
    elif op == "glob":  # fnmatch's translation cannot backtrack catastrophically (bpo-40480)
        # and is a valid regex for any text (it escapes what it does not translate)
        pattern = re.compile(fnmatch.translate(operands[0]), re.I if ignore_case else 0)
    keys = frozenset(fold(o) for o in operands) if op in ("equals", "in", "contains") else None
    return Check(input_name, op, operands, ignore_case, keys or frozenset(), pattern)


def compile_regex(text: str, ignore_case: bool) -> Matcher:
    """Compile a full-match pattern for RE2, refusing shapes that backtrack catastrophically."""
    try:  # Python's parser must read it too: the backtracking checks walk its parse tree
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regex {text!r}: {exc}") from None
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        pattern: Matcher = re2.compile(text, options)
    except re2.error as exc:  # google-re2 (pinned) gives its reason as bytes
        why = exc.args[0].decode()
        raise ValueError(
            f"regex {text!r} is not supported by the linear-time engine (RE2): {why}"
        ) from None
    tree = _sre.parse(text)
    problem = _backtracking(tree, inside_repeat=False)
    repeats = _variable_repeats(tree)
    if problem is None and repeats > MAX_VARIABLE_REPEATS:
        problem = f"{repeats} variable quantifiers (at most {MAX_VARIABLE_REPEATS})"
    if problem is not None:
        raise ValueError(f"regex {text!r} could backtrack catastrophically: {problem}")
    return pattern


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns of one parsed regex item. Lookarounds, atomic groups, possessive
    quantifiers and conditionals never get here: RE2 refuses them first."""
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
        return [av[2]]
    if op is _sre.SUBPATTERN:
        return [av[3]]
    if op is _sre.BRANCH:
        return list(av[1])
    return []


def _bounds(op: Any, av: Any) -> tuple[int, int] | None:
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
        return int(av[0]), int(av[1])
    return None


def _backtracking(tree: Any, *, inside_repeat: bool) -> str | None:
    for op, av in tree:
        bounds = _bounds(op, av)
        if inside_repeat and bounds is not None and bounds[1] > bounds[0]:
            return "a quantifier inside a repeated group, like (a+)+"
        if inside_repeat and op is _sre.BRANCH:
            return "an alternation inside a repeated group, like (a|a)*"
        repeated = inside_repeat or (bounds is not None and bounds[1] > 1)
        for child in _children(op, av):
            problem = _backtracking(child, inside_repeat=repeated)
            if problem is not None:
                return problem
    return None


def _variable_repeats(tree: Any) -> int:
    total = 0
    for op, av in tree:
        bounds = _bounds(op, av)
        total += bounds is not None and bounds[1] > 1 and bounds[1] > bounds[0]
        total += sum(_variable_repeats(child) for child in _children(op, av))
    return total


def evaluate_condition(condition: Condition, lookup: Lookup) -> tuple[bool, str]:
    """Whether the condition holds for the looked-up inputs, and why; raises InputError."""
    if isinstance(condition, Check):
        return _check(condition, lookup(condition.input))
    if isinstance(condition, Not):
        held, detail = evaluate_condition(condition.item, lookup)
        return not held, f"not [{detail}]"
    want = isinstance(condition, AnyOf)
    details = []
    for item in condition.items:
        held, detail = evaluate_condition(item, lookup)
        details.append(detail)
        if held is want:
            break
    else:
        held = not want
    word = "any" if want else "all"
    return held, f"{word} of [{'; '.join(details)}]"


def _check(check: Check, values: tuple[str, ...]) -> tuple[bool, str]:
    what = check.text
    if check.op == "present":
        return (True, f"{what}: value {_show(values)}") if values else _absent(check, False)
    if check.op == "absent":
        return (False, f"{what}: value {_show(values)}") if values else _absent(check, True)
    if not values:
        return _absent(check, False)
    fold = _folder(check.ignore_case)
    for value in values:
        if check.pattern is not None:
            if len(value) > MAX_MATCH_LENGTH:
                raise InputError(
                    f"{what}: a value of {len(value)} characters is longer than the "
                    f"{MAX_MATCH_LENGTH} a pattern may be matched against"
                )
            hit = check.pattern.fullmatch(value) is not None
        else:
            hit = fold(value) in check.keys
        if hit:
            return True, f"{what}: matched value {_clip(value)!r}"
    return False, f"{what}: no match in {_show(values)}"


def _absent(check: Check, held: bool) -> tuple[bool, str]:
    return held, f"{check.text}: input {check.input} absent"


def _folder(ignore_case: bool) -> Callable[[str], str]:
    return str.casefold if ignore_case else str


def _clip(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"


@functools.lru_cache(maxsize=1024)
def _show(values: tuple[str, ...]) -> str:
    shown = ", ".join(repr(_clip(v)) for v in values[:_SHOWN_VALUES])
    more = len(values) - _SHOWN_VALUES
    return shown + (f" (+{more} more)" if more > 0 else "")

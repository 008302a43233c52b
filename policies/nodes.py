"""Reading a composed YAML document node by node, collecting problems with their positions."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import yaml

from policies.errors import Problem, did_you_mean

_KINDS = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true/false",
    "tag:yaml.org,2002:null": "empty",
    "tag:yaml.org,2002:timestamp": "a date",
}


class Mark(Protocol):
    """A position in the YAML text, counted from 0 (PyYAML's pure and C marks both fit)."""

    line: int
    column: int


_TRUE = frozenset({"true", "yes", "on", "y"})  # YAML 1.1 booleans, as PyYAML resolves them


class Reader:
    """Typed access to YAML nodes; every mismatch becomes a Problem at the offending node."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node, message: str) -> None:
        """Record a problem at the node's start."""
        self.at(node.start_mark, message)

    def at(self, mark: Mark | None, message: str) -> None:
        """Record a problem at a YAML mark (the file's start when there is none)."""
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.problems.append(Problem(self.file, line, column, message))

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        keys: Collection[str],
        required: Collection[str] = (),
    ) -> dict[str, yaml.Node] | None:
        """A mapping with known keys only (typos get a did-you-mean); None if not a mapping."""
        pairs = self.pairs(node, what)
        if pairs is None:
            return None
        out: dict[str, yaml.Node] = {}
        for key_node, key, value in pairs:
            if key in keys:
                out[key] = value
            else:
                self.problem(key_node, f"unknown key {key!r} in {what}{did_you_mean(key, keys)}")
        for key in required:
            if key not in out:
                self.problem(node, f"{what} needs {key!r}")
        return out

    def pairs(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, str, yaml.Node]] | None:
        """A mapping's (key node, key, value node) in file order, refusing duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping, not {kind(node)}")
            return None
        out: list[tuple[yaml.Node, str, yaml.Node]] = []
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            key = self.string(key_node, f"a key in {what}")
            if key is None:
                continue
            if key in seen:
                self.problem(
                    key_node, f"duplicate key {key!r} in {what} (first at line {seen[key]})"
                )
                continue
            seen[key] = key_node.start_mark.line + 1
            out.append((key_node, key, value))
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node] | None:
        """A list's items; None if not a list."""
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list, not {kind(node)}")
            return None
        return list(node.value)

    def string(self, node: yaml.Node, what: str, max_length: int = 1024) -> str | None:
        """A non-empty string of at most `max_length` characters; None otherwise."""
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            hint = " (quote it)" if isinstance(node, yaml.ScalarNode) and node.value else ""
            self.problem(node, f"{what} must be a string, not {kind(node)}{hint}")
            return None
        text = str(node.value)
        if not text.strip():
            self.problem(node, f"{what} must not be empty")
            return None
        if len(text) > max_length:
            self.problem(node, f"{what} is longer than {max_length} characters")
            return None
        return text

    def strings(
        self,
        node: yaml.Node,
        what: str,
        *,
        single: bool = False,
        allow_empty: bool = False,
        max_length: int = 1024,
    ) -> list[tuple[str, yaml.Node]] | None:
        """A list of strings (or, with `single`, one string); None on any problem."""
        if single and isinstance(node, yaml.ScalarNode):
            text = self.string(node, what, max_length)
            return None if text is None else [(text, node)]
        items = self.sequence(node, what)
        if items is None:
            return None
        if not items and not allow_empty:
            self.problem(node, f"{what} must not be an empty list")
            return None
        out = [(self.string(item, f"an item of {what}", max_length), item) for item in items]
        if any(text is None for text, _ in out):
            return None
        return [(text, item) for text, item in out if text is not None]

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        """true or false; None otherwise."""
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            self.problem(node, f"{what} must be true or false, not {kind(node)}")
            return None
        return str(node.value).lower() in _TRUE

    def choice(
        self, node: yaml.Node, what: str, choices: Collection[str], noun: str = "value"
    ) -> str | None:
        """One of `choices` (typos get a did-you-mean); None otherwise."""
        text = self.string(node, what)
        if text is None:
            return None
        if text not in choices:
            hint = did_you_mean(text, choices) or f" (one of: {', '.join(choices)})"
            self.problem(node, f"unknown {noun} {text!r} in {what}{hint}")
            return None
        return text


def kind(node: yaml.Node) -> str:
    """What a node is, in words for an error message."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _KINDS.get(node.tag, "a scalar")

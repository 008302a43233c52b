"""What the parts of a policy file share while it is read: the reader (problems with file:line)
and what the file declared so far (environments, inputs). rules.py and testing.py take a Scope;
loader.py's Builder is one, so nothing here imports the loader back."""

from __future__ import annotations

import yaml

from policies.errors import did_you_mean
from policies.model import ALL_ENVIRONMENTS, Environments, InputSpec
from policies.nodes import Reader


class Scope:
    """The reader and the declarations the rest of a file is checked against."""

    def __init__(self, reader: Reader) -> None:
        self.r = reader
        self.environments: tuple[str, ...] = ()
        self.inputs: dict[str, InputSpec] = {}

    def environments_value(
        self, node: yaml.Node, what: str, *, allow_empty: bool
    ) -> Environments | None:
        """`all` or a list of declared environment names."""
        if isinstance(node, yaml.ScalarNode) and node.value == ALL_ENVIRONMENTS:
            return ALL_ENVIRONMENTS
        items = self.r.strings(node, what, allow_empty=allow_empty)
        if items is None:
            return None
        names: list[str] = []
        for name, item in items:
            if name == ALL_ENVIRONMENTS:
                self.r.problem(item, f"write `{what}: all`, not a list containing all")
            elif name not in self.environments:
                hint = did_you_mean(name, self.environments)
                self.r.problem(
                    item, f"environment {name!r} is not one of the declared environments{hint}"
                )
            elif name in names:
                self.r.problem(item, f"environment {name!r} is listed twice")
            else:
                names.append(name)
        return tuple(names) if len(names) == len(items) else None

"""Problems found in a policy file, each pinned to a file, line and column."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One reason a policy file cannot be used; line and column count from 1."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(Exception):
    """A policy file that cannot be used; `problems` lists every reason found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix for the closest candidate, or nothing."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # abbreviations: prod -> production
        close = [c for c in pool if c.casefold().startswith(word.casefold())][:1]
    return f"; did you mean {close[0]!r}?" if close else ""

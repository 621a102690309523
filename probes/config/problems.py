"""The problems of a config: collected with their path and line, raised all at once."""

from __future__ import annotations

import math
from collections.abc import Sequence

from yaml.nodes import Node


class ConfigError(Exception):
    """A config that cannot be used; ``errors`` holds every problem found, one line each."""

    def __init__(self, errors: Sequence[str], *, source: str = "<string>") -> None:
        self.errors: list[str] = list(errors)
        self.source = source
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


def line_of(node: Node) -> int:
    """The line of a node, counted from 1 as editors do."""
    return int(node.start_mark.line) + 1


class Problems:
    """Every problem found, as ``path: what is wrong (line N)``; reading never stops at one."""

    def __init__(self) -> None:
        self._problems: list[tuple[float, str]] = []

    def error(self, path: str, message: str, node: Node | None = None) -> None:
        line = line_of(node) if node is not None else math.inf
        where = f" (line {line})" if node is not None else ""
        self._problems.append((line, f"{path or 'config'}: {message}{where}"))

    @property
    def errors(self) -> list[str]:
        """Every problem, in the order of the file: how an operator reads and fixes them."""
        return [text for _, text in sorted(self._problems, key=lambda problem: problem[0])]

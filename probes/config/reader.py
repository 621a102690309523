"""Typed access to YAML nodes: each value read, or a problem recorded at its path and line.

``${NAME}`` in a string value is replaced from the environment here, and a
value's shown form (:class:`Text`) never holds what a reference expanded to.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import NamedTuple, TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from probes.config.durations import parse_duration
from probes.config.problems import Problems
from probes.config.yamlload import (
    BOOL,
    FLOAT,
    INT,
    MERGE,
    STR,
    TEXT_TAGS,
    is_null,
    kind_of,
    yaml_bool,
    yaml_float,
    yaml_int,
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# `${NAME}`, or `$${...}` (an escaped, literal `${`), or an unterminated `${`.
_REFERENCE = re.compile(r"\$(?P<escape>\$)?\{(?P<body>[^}]*)(?P<close>\})?")

T = TypeVar("T")


class Text(NamedTuple):
    """A string value and how to show it in an error without leaking a substituted secret."""

    value: str
    shown: str


class Reader(Problems):
    """Typed access to YAML nodes; every problem is recorded with its path and line."""

    def __init__(self, env: Mapping[str, str], base_dir: Path | None) -> None:
        super().__init__()
        self.env = env
        self.base_dir = base_dir
        #: every value a ``${NAME}`` expanded to (``Config.secrets``: logs never show them)
        self.substituted: set[str] = set()

    def expected(self, path: str, wanted: str, node: Node) -> None:
        self.error(path, f"must be {wanted}, not {kind_of(node)}", node)

    def mapping(self, node: Node, path: str, known: Collection[str]) -> dict[str, Node] | None:
        """The keys of a mapping; unknown, duplicate and non-text keys are errors."""
        if not isinstance(node, MappingNode):
            self.expected(path, "a mapping", node)
            return None
        result: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path, known)
            if key is None:
                continue
            if key in result:
                self.error(_join(path, key), "is given more than once", key_node)
                continue
            result[key] = value_node
        return result

    def _key(self, key_node: Node, path: str, known: Collection[str]) -> str | None:
        if key_node.tag == MERGE:
            self.error(path, "YAML merge keys (<<) are not supported: write the keys out", key_node)
            return None
        if not isinstance(key_node, ScalarNode) or key_node.tag not in TEXT_TAGS:
            self.error(path, f"keys must be names, not {kind_of(key_node)}", key_node)
            return None
        key = str(key_node.value)
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            self.error(_join(path, key), f"unknown key{hint}", key_node)
            return None
        return key

    def sequence(self, node: Node, path: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.expected(path, "a list", node)
            return None
        return list(node.value)

    def raw_text(self, node: Node, path: str) -> str | None:
        """The text of a scalar as written (numbers and `NO` included), before substitution."""
        if not isinstance(node, ScalarNode) or node.tag not in TEXT_TAGS:
            self.expected(path, "text", node)
            return None
        return str(node.value)

    def text(self, node: Node, path: str) -> Text | None:
        """A string value with ``${NAME}`` substituted from the environment."""
        raw = self.raw_text(node, path)
        if raw is None:
            return None
        if node.tag != STR or "${" not in raw:
            return Text(raw, repr(raw))
        value = self.substitute(raw, path, node)
        if value is None:
            return None
        return Text(value, f"{raw!r} (after substitution)")

    def substitute(self, raw: str, path: str, node: Node) -> str | None:
        """Replace every ``${NAME}``; ``$${`` stands for a literal ``${``."""
        ok = True

        def replace(match: re.Match[str]) -> str:
            nonlocal ok
            body = match.group("body")
            if match.group("escape"):
                return match.group(0)[1:]
            if match.group("close") is None or not _ENV_NAME.match(body):
                self.error(path, "malformed ${...}: write ${NAME}, or $${ for a literal ${", node)
                ok = False
                return ""
            if body not in self.env:
                self.error(path, f"environment variable {body} is not set", node)
                ok = False
                return ""
            self.substituted.add(self.env[body])
            return self.env[body]

        value = _REFERENCE.sub(replace, raw)
        return value if ok else None

    def is_true(self, node: Node) -> bool:
        """Whether a node is a YAML true (no error either way: for cross-checks)."""
        return (
            isinstance(node, ScalarNode)
            and node.tag == BOOL
            and node.value.lower() in ("true", "yes", "on")
        )

    def boolean(self, node: Node, path: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != BOOL:
            self.expected(path, "true or false", node)
            return None
        return yaml_bool(node)

    def integer(self, node: Node, path: str) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != INT:
            self.expected(path, "a whole number", node)
            return None
        try:
            return yaml_int(node)
        except (ValueError, TypeError):
            self.error(path, f"{node.value!r} is not a whole number", node)
            return None

    def number(self, node: Node, path: str) -> float | None:
        if not isinstance(node, ScalarNode) or node.tag not in (INT, FLOAT):
            self.expected(path, "a number", node)
            return None
        try:
            if node.tag == INT:
                return float(yaml_int(node))
            return yaml_float(node)
        except (ValueError, TypeError, OverflowError):
            self.error(path, f"{node.value!r} is not a number", node)
            return None

    def duration(self, node: Node, path: str) -> float | None:
        """A duration greater than zero: seconds as a number, or text like '5m'."""
        if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT):
            value: float | None = self.number(node, path)
        else:
            text = self.text(node, path)
            if text is None:
                return None
            try:
                value = parse_duration(text.value)
            except ValueError:
                self.error(
                    path,
                    f"{text.shown} is not a duration: write seconds or units like "
                    "'250ms', '60s', '5m', '1h30m', '30d' (largest unit first)",
                    node,
                )
                return None
        if value is None:
            return None
        if not math.isfinite(value) or value <= 0:
            self.error(path, "must be a duration greater than zero", node)
            return None
        return value

    def items(
        self, node: Node | None, path: str, read: Callable[[Node, str], T | None]
    ) -> list[T] | None:
        """Each element of a list read with ``read``; None (after errors) if any is bad."""
        if is_null(node):
            return []
        assert node is not None
        elements = self.sequence(node, path)
        if elements is None:
            return None
        results = [read(element, f"{path}[{i}]") for i, element in enumerate(elements)]
        if any(r is None for r in results):
            return None
        return [r for r in results if r is not None]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

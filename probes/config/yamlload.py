"""YAML composed into nodes, not objects, so that every value keeps its line.

Only YAML's core scalar types are read, with PyYAML's safe constructor; merge
keys and other tags are for the readers to refuse.
"""

from __future__ import annotations

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from probes.config.problems import ConfigError

_TAG = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
MERGE = _TAG + "merge"
TEXT_TAGS = frozenset({BOOL, INT, FLOAT, STR, _TAG + "timestamp"})


def compose(text: str, source: str) -> Node | None:
    """The document's node tree; YAML syntax errors become a ConfigError with the line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([f"{source}: {_yaml_problem(exc)}"], source=source) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        problem = f"YAML syntax error: {exc.reason} (line {line})"
        raise ConfigError([f"{source}: {problem}"], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML syntax error: {exc}"], source=source) from None
    except RecursionError:
        raise ConfigError([f"{source}: YAML nested too deeply"], source=source) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem and context as one sentence ending in the line of the problem."""
    what = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None:
        what += f" ({exc.context} from line {exc.context_mark.line + 1})"
    elif exc.context:
        what += f" ({exc.context})"
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1})" if mark is not None else ""
    return f"YAML syntax error: {what}{where}"


def kind_of(node: Node) -> str:
    """What a node is, in the words an operator would use."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        NULL: "nothing (null)",
        BOOL: "true/false",
        INT: "a number",
        FLOAT: "a number",
        STR: "text",
    }.get(node.tag, f"a value tagged {node.tag}")


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == NULL)


_SAFE = SafeConstructor()  # its scalar constructors keep no state


def yaml_bool(node: ScalarNode) -> bool:
    """A ``!!bool`` scalar's value (``yes``, ``On``, ``false``, ...)."""
    return bool(_SAFE.construct_yaml_bool(node))


def yaml_int(node: ScalarNode) -> int:
    """An ``!!int`` scalar's value (``1_000``, ``0x1f``, ...); ValueError if it is none."""
    return int(_SAFE.construct_yaml_int(node))


def yaml_float(node: ScalarNode) -> float:
    """A ``!!float`` scalar's value (``.inf``, ``1e3``, ...); ValueError if it is none."""
    return float(_SAFE.construct_yaml_float(node))

"""Reading config.yaml into the validated records of :mod:`probes.model` (CONTRACT §3).

The YAML is composed into nodes (not constructed into Python objects) so that
every value keeps its line. The walk never stops at the first problem: each
one is collected as ``path.to.field: what is wrong (line N)`` and all of them
are raised together in one :class:`ConfigError`, because an operator fixing a
config wants the whole list, not one round trip per typo. Unknown keys are
rejected everywhere: a misspelt key silently ignored is a probe silently not
made.

``${NAME}`` in a string value is replaced from the environment so that proxy
passwords need not live in the file. Error messages show the ``${NAME}``
template, never what it expanded to, and never a proxy password.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import ssl
import zoneinfo
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar
from urllib.parse import unquote

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from probes.model import (
    CANARY_SERVICE,
    Agent,
    Config,
    Defaults,
    Fingerprints,
    Proxy,
    ResolverSpec,
    Service,
    Storage,
    Target,
    Vantage,
    redact_url,
)

__all__ = ["ConfigError", "load_config", "parse_config", "parse_duration"]

#: Upper bound for defaults.max_body_bytes: a probe reads bodies into memory.
MAX_BODY_BYTES_LIMIT = 64 * 1024 * 1024
#: A CA bundle larger than this is surely not one (and we do not read /dev/zero).
_MAX_CA_FILE_BYTES = 16 * 1024 * 1024

_NAME = re.compile(r"[a-z0-9_-]+\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# `${NAME}`, or `$${...}` (an escaped, literal `${`), or an unterminated `${`.
_REFERENCE = re.compile(r"\$(?P<escape>\$)?\{(?P<body>[^}]*)(?P<close>\})?")
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")
_PLAIN_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\Z")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("w", "d", "h", "m", "s", "ms")

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
_MERGE = _TAG + "merge"
_TEXT_TAGS = frozenset({_BOOL, _INT, _FLOAT, _STR, _TAG + "timestamp"})

_TOP_KEYS = (
    "version", "defaults", "vantages", "canaries", "services",
    "storage", "probe", "fingerprints", "window",
)  # fmt: skip
_DEFAULTS_KEYS = ("interval", "timeout", "ca_file", "throttle_ratio", "max_body_bytes")
_VANTAGE_KEYS = (
    "name", "control", "resolver", "proxy", "source_address", "country", "timezone", "agent",
)  # fmt: skip
_AGENT_KEYS = ("url", "vantage", "username", "password", "ca_file")
#: What a vantage measured by a remote agent cannot have: the agent's own config has them.
_LOCAL_PATH_KEYS = ("resolver", "proxy", "source_address")
_SERVICE_KEYS = ("name", "targets")
_TARGET_KEYS = ("url", "expect_status", "throughput")
_STORAGE_KEYS = ("dir", "retention")
_PROBE_KEYS = ("allow",)
_FINGERPRINT_KEYS = ("dns_addresses", "http_body_patterns")
_WINDOW_KEYS = ("activity",)

_RESOLVER_SCHEMES = {"udp": 53, "tcp": 53, "tls": 853}
_PROXY_SCHEMES = ("socks5", "http")

T = TypeVar("T")


class ConfigError(Exception):
    """A config that cannot be used; ``errors`` holds every problem found, one line each."""

    def __init__(self, errors: Sequence[str], *, source: str = "<string>") -> None:
        self.errors: list[str] = list(errors)
        self.source = source
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file.

    Relative ``ca_file`` paths are taken against the file's directory, so a
    config and its CA can be moved together. ``env`` (default: the process
    environment) supplies ``${NAME}`` substitutions.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such config file"], source=source) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text"], source=source) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problem = f"{source}: cannot read the config file: {reason}"
        raise ConfigError([problem], source=source) from None
    directory = Path(os.path.abspath(source)).parent
    config = parse_config(text, source=source, base_dir=directory, env=env)
    return dataclasses.replace(config, path=source)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate config text; raises :class:`ConfigError` listing every problem.

    ``base_dir`` anchors a relative ``ca_file`` (default: the current directory).
    """
    root = _compose(text, source)
    anchor = None if base_dir is None else Path(base_dir)
    reader = _Reader(os.environ if env is None else env, anchor)
    config = _read_config(reader, root)
    if reader.errors or config is None:
        raise ConfigError(reader.errors or ["config: not usable"], source=source)
    return config


def parse_duration(value: object) -> float:
    """Seconds in a duration: ``"60s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"30d"``, ``"2w"``.

    Plain numbers (and numeric strings) are seconds. Units go from largest to
    smallest, each at most once, as in Prometheus, so ``"5m5m"`` is a typo
    rather than ten minutes. Raises ValueError with a sentence saying why.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_text(value.strip())
    else:
        kind = type(value).__name__
        raise ValueError(f"a duration must be text like '60s' or a number, not {kind}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration: it must be a finite, non-negative time")
    return seconds


def _duration_text(text: str) -> float:
    if _PLAIN_NUMBER.match(text):
        return float(text)
    bad = ValueError(
        f"{text!r} is not a duration: write a number of seconds or units like "
        "'250ms', '60s', '5m', '1h30m', '30d', '2w'"
    )
    if not text:
        raise bad
    position, total, last_rank = 0, 0.0, -1
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise bad
        rank = _UNIT_ORDER.index(match.group(2))
        if rank <= last_rank:
            raise ValueError(
                f"{text!r} is not a duration: units go from largest to smallest, once each"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position, last_rank = match.end(), rank
    return total


# --- YAML ---------------------------------------------------------------------------------------


def _compose(text: str, source: str) -> Node | None:
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


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: Node) -> str:
    """What a node is, in the words an operator would use."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _NULL: "nothing (null)",
        _BOOL: "true/false",
        _INT: "a number",
        _FLOAT: "a number",
        _STR: "text",
    }.get(node.tag, f"a value tagged {node.tag}")


def _is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL)


class _Text(NamedTuple):
    """A string value and how to show it in an error without leaking a substituted secret."""

    value: str
    shown: str


class _Reader:
    """Typed access to YAML nodes; every problem is recorded with its path and line."""

    def __init__(self, env: Mapping[str, str], base_dir: Path | None) -> None:
        self._problems: list[tuple[float, str]] = []
        self.env = env
        self.base_dir = base_dir
        self._constructor = SafeConstructor()

    def error(self, path: str, message: str, node: Node | None = None) -> None:
        line = _line(node) if node is not None else math.inf
        where = f" (line {line})" if node is not None else ""
        self._problems.append((line, f"{path or 'config'}: {message}{where}"))

    @property
    def errors(self) -> list[str]:
        """Every problem, in the order of the file: how an operator reads and fixes them."""
        return [text for _, text in sorted(self._problems, key=lambda problem: problem[0])]

    def expected(self, path: str, wanted: str, node: Node) -> None:
        self.error(path, f"must be {wanted}, not {_kind(node)}", node)

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
        if key_node.tag == _MERGE:
            self.error(path, "YAML merge keys (<<) are not supported: write the keys out", key_node)
            return None
        if not isinstance(key_node, ScalarNode) or key_node.tag not in _TEXT_TAGS:
            self.error(path, f"keys must be names, not {_kind(key_node)}", key_node)
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
        if not isinstance(node, ScalarNode) or node.tag not in _TEXT_TAGS:
            self.expected(path, "text", node)
            return None
        return str(node.value)

    def text(self, node: Node, path: str) -> _Text | None:
        """A string value with ``${NAME}`` substituted from the environment."""
        raw = self.raw_text(node, path)
        if raw is None:
            return None
        if node.tag != _STR or "${" not in raw:
            return _Text(raw, repr(raw))
        value = self.substitute(raw, path, node)
        if value is None:
            return None
        return _Text(value, f"{raw!r} (after substitution)")

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
            return self.env[body]

        value = _REFERENCE.sub(replace, raw)
        return value if ok else None

    def is_true(self, node: Node) -> bool:
        """Whether a node is a YAML true (no error either way: for cross-checks)."""
        return (
            isinstance(node, ScalarNode)
            and node.tag == _BOOL
            and node.value.lower() in ("true", "yes", "on")
        )

    def boolean(self, node: Node, path: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.expected(path, "true or false", node)
            return None
        return bool(self._constructor.construct_yaml_bool(node))

    def integer(self, node: Node, path: str) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.expected(path, "a whole number", node)
            return None
        try:
            return int(self._constructor.construct_yaml_int(node))
        except (ValueError, TypeError):
            self.error(path, f"{node.value!r} is not a whole number", node)
            return None

    def number(self, node: Node, path: str) -> float | None:
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
            self.expected(path, "a number", node)
            return None
        try:
            if node.tag == _INT:
                return float(self._constructor.construct_yaml_int(node))
            return float(self._constructor.construct_yaml_float(node))
        except (ValueError, TypeError, OverflowError):
            self.error(path, f"{node.value!r} is not a number", node)
            return None

    def duration(self, node: Node, path: str) -> float | None:
        """A duration greater than zero: seconds as a number, or text like '5m'."""
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
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
        if _is_null(node):
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


# --- sections -----------------------------------------------------------------------------------


def _read_config(r: _Reader, root: Node | None) -> Config | None:
    if _is_null(root):
        r.error("config", "is empty: it needs version: 1, vantages and services")
        return None
    assert root is not None
    top = r.mapping(root, "", _TOP_KEYS)
    if top is None:
        return None
    _read_version(r, top.get("version"), root)
    defaults = _optional(r, top, "defaults", _read_defaults, Defaults())
    vantages = _read_vantages(r, top.get("vantages"), root)
    no_targets: tuple[Target, ...] = ()
    no_patterns: tuple[str, ...] = ()
    canaries = _optional(r, top, "canaries", _read_canaries, no_targets)
    services = _read_services(r, top.get("services"), root)
    storage = _optional(r, top, "storage", _read_storage, Storage())
    probe_allow = _optional(r, top, "probe", _read_probe, no_patterns)
    fingerprints = _optional(r, top, "fingerprints", _read_fingerprints, Fingerprints())
    window = _optional(r, top, "window", _read_window, None)
    if None in (defaults, vantages, canaries, services, storage, probe_allow, fingerprints):
        return None
    assert defaults is not None and vantages is not None and services is not None
    assert canaries is not None and storage is not None and probe_allow is not None
    assert fingerprints is not None
    return Config(
        vantages=vantages,
        services=services,
        defaults=defaults,
        canaries=canaries,
        storage=storage,
        probe_allow=probe_allow,
        fingerprints=fingerprints,
        window_activity=window,
    )


def _optional(
    r: _Reader,
    section: dict[str, Node],
    key: str,
    read: Callable[[_Reader, Node, str], T | None],
    default: T,
) -> T | None:
    """An optional section or field: absent or null means the default."""
    node = section.get(key)
    if _is_null(node):
        return default
    assert node is not None
    return read(r, node, key)


def _read_version(r: _Reader, node: Node | None, root: Node) -> None:
    if node is None:
        r.error("version", "is required: write version: 1 at the top", root)
    elif not (isinstance(node, ScalarNode) and node.tag == _INT):
        r.error("version", f"must be the number 1, not {_kind(node)}", node)
    elif (number := r.integer(node, "version")) is not None and number != 1:
        r.error("version", f"unsupported version {number}: this lifeline reads version: 1", node)


def _read_defaults(r: _Reader, node: Node, path: str) -> Defaults | None:
    fields = r.mapping(node, path, _DEFAULTS_KEYS)
    if fields is None:
        return None
    base = Defaults()

    def given(key: str, read: Callable[[Node, str], T | None], default: T) -> T | None:
        node = fields.get(key)
        return default if _is_null(node) else read(node, f"{path}.{key}")  # type: ignore[arg-type]

    interval = given("interval", r.duration, base.interval)
    timeout = given("timeout", r.duration, base.timeout)
    ca_file = given("ca_file", lambda n, p: _read_ca_file(r, n, p), None)
    ratio = given("throttle_ratio", lambda n, p: _read_ratio(r, n, p), base.throttle_ratio)
    body = given("max_body_bytes", lambda n, p: _read_body_limit(r, n, p), base.max_body_bytes)
    if interval is None or timeout is None:
        return None
    if timeout > interval:
        _timeout_too_long(r, timeout, interval, fields, path)
        return None
    if ratio is None or body is None or (ca_file is None and not _is_null(fields.get("ca_file"))):
        return None
    return Defaults(
        interval=interval,
        timeout=timeout,
        ca_file=ca_file,
        throttle_ratio=ratio,
        max_body_bytes=body,
    )


def _timeout_too_long(
    r: _Reader, timeout_s: float, interval_s: float, fields: dict[str, Node], path: str
) -> None:
    """Report a timeout longer than the interval at whichever of the two was written."""
    timeout, interval = f"{timeout_s:g}s", f"{interval_s:g}s"
    why = "a measurement must end before the next one of the same target starts"
    if "timeout" in fields:
        r.error(
            f"{path}.timeout",
            f"{timeout} is longer than the interval ({interval}): {why}",
            fields["timeout"],
        )
    else:
        r.error(
            f"{path}.interval",
            f"{interval} is shorter than the default timeout "
            f"({timeout}): {why}; set a shorter timeout too",
            fields["interval"],
        )


def _read_ratio(r: _Reader, node: Node, path: str) -> float | None:
    value = r.number(node, path)
    if value is not None and not 0 < value < 1:
        r.error(path, f"{value:g} must be between 0 and 1 (exclusive), e.g. 0.25", node)
        return None
    return value


def _read_body_limit(r: _Reader, node: Node, path: str) -> int | None:
    value = r.integer(node, path)
    if value is not None and not 0 < value <= MAX_BODY_BYTES_LIMIT:
        r.error(path, f"{value} must be between 1 and {MAX_BODY_BYTES_LIMIT} (64 MiB)", node)
        return None
    return value


def _read_ca_file(r: _Reader, node: Node, path: str) -> str | None:
    """An existing PEM file; relative paths are taken against the config's directory."""
    text = r.text(node, path)
    if text is None:
        return None
    if not text.value.strip():
        r.error(path, "must be a file name (or null)", node)
        return None
    try:
        file = Path(os.path.expanduser(text.value))
        if not file.is_absolute() and r.base_dir is not None:
            file = r.base_dir / file
        problem = _pem_problem(file)
    except (ValueError, OSError) as exc:  # e.g. an embedded NUL byte
        problem = f"is not a usable file name ({exc})"
    if problem:
        where = "" if str(file) == text.value else f" (looked for {file})"
        r.error(path, f"{text.shown} {problem}{where}", node)
        return None
    return str(file)


def _pem_problem(file: Path) -> str | None:
    """Why a CA file cannot be used, or None if the TLS library loads it."""
    if not file.exists():
        return "does not exist"
    if not file.is_file():
        return "is not a regular file"
    if file.stat().st_size > _MAX_CA_FILE_BYTES:
        return "is too large to be a CA bundle"
    if not os.access(file, os.R_OK):
        return "is not readable"
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(file))
    except (ssl.SSLError, ValueError):
        return "holds no PEM certificate that can be loaded"
    return None


# --- vantages -----------------------------------------------------------------------------------


def _read_vantages(r: _Reader, node: Node | None, root: Node) -> tuple[Vantage, ...] | None:
    elements = _required_list(r, node, root, "vantages", "vantage")
    if elements is None:
        return None
    vantages = [_read_vantage(r, e, f"vantages[{i}]") for i, e in enumerate(elements)]
    unique = _check_unique_names(r, elements, "vantages")
    controls = [i for i, e in enumerate(elements) if r.is_true(_field_node(e, "control"))]
    for i in controls[1:]:
        r.error(
            f"vantages[{i}].control",
            f"only one vantage can be the control; vantages[{controls[0]}] already is",
            _field_node(elements[i], "control"),
        )
    if not unique or len(controls) > 1 or any(v is None for v in vantages):
        return None
    return tuple(v for v in vantages if v is not None)


def _required_list(
    r: _Reader, node: Node | None, root: Node, path: str, noun: str
) -> list[Node] | None:
    """The elements of a required, non-empty top-level list."""
    if _is_null(node):
        r.error(path, f"at least one {noun} is required", node or root)
        return None
    assert node is not None
    elements = r.sequence(node, path)
    if elements is not None and not elements:
        r.error(path, f"at least one {noun} is required", node)
        return None
    return elements


def _check_unique_names(r: _Reader, elements: list[Node], path: str) -> bool:
    """Report every ``name:`` already used by an earlier element (judged as written)."""
    first: dict[str, int] = {}
    unique = True
    for i, element in enumerate(elements):
        node = _field_node(element, "name")
        if node is element or not isinstance(node, ScalarNode):
            continue
        name = str(node.value)
        if name in first:
            r.error(
                f"{path}[{i}].name", f"{name!r} is already the name of {path}[{first[name]}]", node
            )
            unique = False
        first.setdefault(name, i)
    return unique


def _field_node(node: Node, key: str) -> Node:
    """The value node of ``key`` in a mapping node (for the line of an error), else the node."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return node


def _read_vantage(r: _Reader, node: Node, path: str) -> Vantage | None:
    fields = r.mapping(node, path, _VANTAGE_KEYS)
    if fields is None:
        return None
    ok = True
    name = _required(r, fields, "name", path, node, _read_name)
    values: dict[str, object] = {}
    agent_node = fields.get("agent")
    if _is_null(agent_node):
        resolver = _required(r, fields, "resolver", path, node, _read_resolver)
    else:  # measured by a remote agent: no resolver or path here
        assert agent_node is not None
        agent = _read_agent(r, agent_node, f"{path}.agent", name or "")
        ok = _no_local_path(r, fields, path) and agent is not None
        resolver = None if agent is None else ResolverSpec(kind="agent", url=agent.url)
        values["agent"] = agent
    for key, read in (
        ("control", lambda n, p: r.boolean(n, p)),
        ("proxy", lambda n, p: _read_proxy(r, n, p)),
        ("source_address", lambda n, p: _read_ip(r, n, p)),
        ("country", lambda n, p: _read_country(r, n, p)),
        ("timezone", lambda n, p: _read_timezone(r, n, p)),
    ):
        if not _is_null(fields.get(key)):
            values[key] = read(fields[key], f"{path}.{key}")
            ok = ok and values[key] is not None
    if not ok or name is None or resolver is None:
        return None
    return Vantage(name=name, resolver=resolver, **values)  # type: ignore[arg-type]


def _no_local_path(r: _Reader, fields: dict[str, Node], path: str) -> bool:
    """A vantage measured by an agent has no resolver or path of its own here."""
    clash = [key for key in _LOCAL_PATH_KEYS if not _is_null(fields.get(key))]
    for key in clash:
        r.error(
            f"{path}.{key}",
            "cannot be combined with agent: the agent's own config says how its vantage "
            "resolves and connects",
            fields[key],
        )
    return not clash


def _read_agent(r: _Reader, node: Node, path: str, vantage: str) -> Agent | None:
    """``agent: URL`` or ``agent: {url, vantage, username, password, ca_file}``.

    The URL's host must be an IP address (never the system resolver), and it
    carries no credentials: they go in username/password, where ``${NAME}``
    keeps the password out of the file. ``vantage`` defaults to this vantage's name.
    """
    if isinstance(node, MappingNode):
        fields = r.mapping(node, path, _AGENT_KEYS)
        if fields is None:
            return None
    else:
        fields = {"url": node}
    url = _required(r, fields, "url", path, node, _read_agent_url)
    texts: dict[str, str | None] = {}
    ok = url is not None
    for key in ("vantage", "username", "password"):
        if not _is_null(fields.get(key)):
            read = _read_name if key == "vantage" else _read_plain_text
            texts[key] = read(r, fields[key], f"{path}.{key}")
            ok = ok and texts[key] is not None
    if texts.get("password") is not None and texts.get("username") is None:
        r.error(f"{path}.password", "needs a username as well", fields["password"])
        ok = False
    ca_file = None
    if not _is_null(fields.get("ca_file")):
        ca_file = _read_ca_file(r, fields["ca_file"], f"{path}.ca_file")
        ok = ok and ca_file is not None
    if not ok or url is None:
        return None
    return Agent(
        url=url,
        vantage=texts.get("vantage") or vantage,
        username=texts.get("username"),
        password=texts.get("password"),
        ca_file=ca_file,
    )


def _read_plain_text(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    return None if text is None else text.value


def _read_agent_url(r: _Reader, node: Node, path: str) -> str | None:
    """http(s)://IP[:port][/prefix] with no credentials, query or fragment."""
    text = r.text(node, path)
    if text is None:
        return None
    url = text.value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    netloc, _, _prefix = rest.partition("/")
    problem = None
    if not sep or scheme.lower() not in ("http", "https"):
        problem = "must be http://IP:port or https://IP:port (the agent's address)"
    elif "@" in netloc or "?" in rest or "#" in rest:
        problem = "an agent URL has no credentials, query or fragment: use username and password"
    else:
        split = _host_port(netloc)
        if isinstance(split, str):
            problem = split
        elif _ip(split[0]) is None:
            problem = (
                "the agent's host must be an IP address: lifeline never asks the system "
                "resolver where an agent is"
            )
    if problem:
        r.error(path, f"{_redact_userinfo(text.shown)}: {problem}", node)
        return None
    return scheme.lower() + "://" + rest


def _required(
    r: _Reader,
    fields: dict[str, Node],
    key: str,
    path: str,
    parent: Node,
    read: Callable[[_Reader, Node, str], T | None],
) -> T | None:
    node = fields.get(key)
    if _is_null(node):
        r.error(f"{path}.{key}", "is required", node or parent)
        return None
    assert node is not None
    return read(r, node, f"{path}.{key}")


def _read_name(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    if not _NAME.match(text.value):
        r.error(path, f"{text.shown} must be lower-case letters, digits, '_' or '-'", node)
        return None
    return text.value


def _read_ip(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    address = _ip(text.value.strip())
    if address is None:
        r.error(path, f"{text.shown} is not an IP address", node)
    return address


def _ip(text: str) -> str | None:
    """The normalized form of an IP literal, or None if it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _read_country(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    code = text.value.strip().upper()
    if not (len(code) == 2 and code.isascii() and code.isalpha()):
        r.error(path, f"{text.shown} must be a two-letter country code such as IR", node)
        return None
    return code


def _read_timezone(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    try:
        zoneinfo.ZoneInfo(text.value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        r.error(path, f"{text.shown} is not a known IANA time zone such as Asia/Tehran", node)
        return None
    return text.value


def _read_resolver(r: _Reader, node: Node, path: str) -> ResolverSpec | None:
    text = r.text(node, path)
    if text is None:
        return None
    spec = _resolver(text.value.strip())
    if isinstance(spec, str):
        r.error(path, f"{text.shown}: {spec}", node)
        return None
    return spec


def _resolver(value: str) -> ResolverSpec | str:
    """A resolver spec, or a sentence saying what is wrong with it."""
    if value == "system":
        return ResolverSpec(kind="system")
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "udp", value
    scheme = scheme.lower()
    if scheme == "https":
        return _doh_resolver(value, rest)
    if scheme not in _RESOLVER_SCHEMES:
        return (
            f"unsupported resolver scheme {scheme!r}: use system, IP[:port], "
            "tcp://IP:port, tls://IP:port or https://IP/dns-query"
        )
    if "/" in rest or "?" in rest or "#" in rest:
        return "a resolver address has no path"
    split = _host_port(rest)
    if isinstance(split, str):
        return split
    host, port = split
    address = _ip(host)
    if address is None:
        return (
            "not an IP address: name a resolver by its address, "
            "since lifeline never asks the system resolver where a resolver is"
        )
    return ResolverSpec(kind=scheme, host=address, port=port or _RESOLVER_SCHEMES[scheme])


def _doh_resolver(url: str, rest: str) -> ResolverSpec | str:
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in netloc:
        return "a DoH URL has no user name or password"
    split = _host_port(netloc)
    if isinstance(split, str):
        return split
    host, port = split
    address = _ip(host)
    if address is None:
        return (
            "the DoH server must be named by its IP address (e.g. https://9.9.9.9/dns-query), "
            "since lifeline never asks the system resolver where a resolver is"
        )
    return ResolverSpec(kind="https", host=address, port=port or 443, url=url)


def _host_port(text: str) -> tuple[str, int | None] | str:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; an IPv6 literal needs brackets
    only when a port follows. Returns a sentence on error."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return "write an IPv6 address as [address] or [address]:port"
        port_text = after[1:] if after else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None
    if not host:
        return "no host given"
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        return "the port must be a number from 1 to 65535"
    return host, int(port_text)


def _read_proxy(r: _Reader, node: Node, path: str) -> Proxy | None:
    """A proxy URL. Its password never appears in an error.

    When the URL is written out (``socks5://user:${PASS}@127.0.0.1:1080``), it is
    split first and substituted per part, so a password from the environment
    may hold any character; literal parts are percent-decoded.
    """
    raw = r.raw_text(node, path)
    if raw is None:
        return None
    template = raw.strip()
    substitutes = node.tag == _STR and "${" in template
    if substitutes and not _SCHEME_PREFIX.match(template):  # the whole URL from the environment
        whole = r.substitute(template, path, node)
        if whole is None:
            return None
        template, substitutes = whole.strip(), False
    parts = _proxy_parts(template)
    if isinstance(parts, str):
        r.error(path, parts, node)
        return None

    def expand(text: str) -> str | None:
        text = unquote(text)
        return r.substitute(text, path, node) if substitutes else text

    scheme, user, password, host_template, port_text = parts
    user_value, password_value, host = (
        expand(part or "") for part in (user, password, host_template)
    )
    if user_value is None or password_value is None or host is None:
        return None
    problem = _proxy_problem(scheme, user, password, user_value, host)
    if problem:
        literal_host = "${" not in host_template
        r.error(path, problem.replace("{host}", repr(host) if literal_host else "the host"), node)
        return None
    return Proxy(
        kind=scheme,
        host=str(ipaddress.ip_address(host)),
        port=int(port_text),
        username=user_value if user is not None else None,
        password=password_value if password is not None else None,
    )


class _ProxyParts(NamedTuple):
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: str


def _proxy_parts(text: str) -> _ProxyParts | str:
    """Split a proxy URL without decoding or judging its parts; a sentence on error.

    The messages name no part of the URL: any of it might be a password.
    """
    usage = "must be socks5://[user:password@]IP:port or http://[user:password@]IP:port"
    scheme, sep, rest = text.partition("://")
    if not sep:
        return usage
    netloc, _, suffix = rest.partition("/")
    if suffix or "?" in netloc or "#" in netloc:
        return f"a proxy URL has no path: it {usage}"
    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        user, colon, password_text = userinfo.partition(":")
        password = password_text if colon else None
    split = _host_port(hostport)
    if isinstance(split, str):
        return f"{split}: the proxy {usage}"
    host, port = split
    if port is None:
        return f"the proxy port is missing: it {usage}"
    return _ProxyParts(scheme.lower(), user, password, host, str(port))


def _proxy_problem(
    scheme: str, user: str | None, password: str | None, user_value: str, host: str
) -> str | None:
    """What is wrong with split proxy parts, or None. ``{host}`` is filled in by the caller."""
    if scheme not in _PROXY_SCHEMES:
        return f"unsupported proxy scheme {scheme!r}: use socks5:// or http://"
    if user is not None and not user_value:
        return "the proxy credentials need a user name before the ':' and '@'"
    if password is not None and user is None:
        return "the proxy credentials need a user name"
    if _ip(host) is None:
        return (
            "the proxy host {host} must be an IP address (write 127.0.0.1, not localhost): "
            "the proxy address must not depend on the system resolver"
        )
    return None


# --- targets and services -----------------------------------------------------------------------


def _read_target(r: _Reader, node: Node, path: str) -> Target | None:
    """A target URL, or a mapping {url, expect_status, throughput}."""
    if not isinstance(node, MappingNode):
        if isinstance(node, SequenceNode):
            r.expected(path, "a URL or a mapping with url:", node)
            return None
        return _target_url(r, node, path, (), False)
    fields = r.mapping(node, path, _TARGET_KEYS)
    if fields is None:
        return None
    statuses: list[int] | None = []
    throughput: bool | None = False
    if not _is_null(fields.get("expect_status")):
        statuses = r.items(fields["expect_status"], f"{path}.expect_status", _status_reader(r))
    if not _is_null(fields.get("throughput")):
        throughput = r.boolean(fields["throughput"], f"{path}.throughput")
    url_node = fields.get("url")
    if _is_null(url_node):
        r.error(f"{path}.url", "is required", url_node or node)
        return None
    assert url_node is not None
    target = _target_url(r, url_node, f"{path}.url", tuple(statuses or ()), bool(throughput))
    if target is None or statuses is None or throughput is None:
        return None
    if target.scheme not in ("http", "https") and (statuses or throughput):
        what = "expect_status" if statuses else "throughput"
        r.error(f"{path}.{what}", "applies only to http:// and https:// targets", fields[what])
        return None
    return target


def _status_reader(r: _Reader) -> Callable[[Node, str], int | None]:
    def read(node: Node, path: str) -> int | None:
        value = r.integer(node, path)
        if value is not None and not 100 <= value <= 599:
            r.error(path, f"{value} is not an HTTP status (100-599)", node)
            return None
        return value

    return read


def _target_url(
    r: _Reader, node: Node, path: str, statuses: tuple[int, ...], throughput: bool
) -> Target | None:
    text = r.text(node, path)
    if text is None:
        return None
    url = text.value.strip()
    shown = _redact_userinfo(text.shown)
    try:
        target = Target.parse(url, expect_status=statuses, throughput=throughput)
    except ValueError as exc:
        r.error(path, _target_problem(str(exc), url, text, shown), node)
        return None
    problem = _host_problem(target.host)
    if not problem and target.scheme != "dns" and target.port == 0:
        problem = "port 0 cannot be connected to"
    if problem:
        r.error(path, f"{shown}: {problem}", node)
        return None
    return target


def _target_problem(message: str, url: str, text: _Text, shown: str) -> str:
    """Target.parse's sentence, with the URL as it may be shown (no password, no secret)."""
    for quoted in (repr(url), repr(redact_url(url))):
        if quoted in message:
            return message.replace(quoted, shown)
    if "@" in url or text.shown != repr(text.value):  # the message may quote part of a secret
        return f"{shown}: not a valid URL"
    return f"{shown}: {message}"


def _redact_userinfo(shown: str) -> str:
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", shown)


def _host_problem(host: str) -> str | None:
    if _ip(host) is not None:
        return None
    if not host.isascii():
        return "write an internationalized host name in its xn-- (punycode) form"
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        return f"{host!r} is not a valid host name"
    return None


def _read_targets(r: _Reader, node: Node, path: str) -> tuple[Target, ...] | None:
    """A list of targets; two that name the same endpoint are an error."""
    elements = r.sequence(node, path)
    if elements is None:
        return None
    targets = [_read_target(r, e, f"{path}[{i}]") for i, e in enumerate(elements)]
    seen: dict[tuple[str, str, int, str], int] = {}
    for i, target in enumerate(targets):
        if target is None:
            continue
        key = (target.scheme, target.host, target.port, target.path)
        if key in seen:
            r.error(f"{path}[{i}]", f"the same endpoint as {path}[{seen[key]}]", elements[i])
        seen.setdefault(key, i)
    if any(t is None for t in targets) or len(seen) < len(targets):
        return None
    return tuple(t for t in targets if t is not None)


def _read_canaries(r: _Reader, node: Node, path: str) -> tuple[Target, ...] | None:
    return _read_targets(r, node, path)


def _read_services(r: _Reader, node: Node | None, root: Node) -> tuple[Service, ...] | None:
    elements = _required_list(r, node, root, "services", "service")
    if elements is None:
        return None
    services = [_read_service(r, e, f"services[{i}]") for i, e in enumerate(elements)]
    unique = _check_unique_names(r, elements, "services")
    if not unique or any(s is None for s in services):
        return None
    return tuple(s for s in services if s is not None)


def _read_service(r: _Reader, node: Node, path: str) -> Service | None:
    fields = r.mapping(node, path, _SERVICE_KEYS)
    if fields is None:
        return None
    name = _required(r, fields, "name", path, node, _read_name)
    if name == CANARY_SERVICE:
        r.error(
            f"{path}.name",
            f"{name!r} is reserved for the canaries: list canary targets under canaries:",
            fields["name"],
        )
        name = None
    targets = _required(r, fields, "targets", path, node, _read_targets)
    if targets is not None and not targets:
        r.error(f"{path}.targets", "at least one target is required", fields["targets"])
        return None
    if name is None or targets is None:
        return None
    return Service(name=name, targets=targets)


# --- the smaller sections -----------------------------------------------------------------------


def _read_storage(r: _Reader, node: Node, path: str) -> Storage | None:
    fields = r.mapping(node, path, _STORAGE_KEYS)
    if fields is None:
        return None
    base = Storage()
    directory: str | None = base.dir
    retention: float | None = base.retention
    if not _is_null(fields.get("dir")):
        text = r.text(fields["dir"], f"{path}.dir")
        directory = None if text is None else text.value
        if text is not None and not text.value.strip():
            r.error(f"{path}.dir", "must be a directory name", fields["dir"])
            directory = None
    if not _is_null(fields.get("retention")):
        retention = r.duration(fields["retention"], f"{path}.retention")
    if directory is None or retention is None:
        return None
    return Storage(dir=directory, retention=retention)


def _read_probe(r: _Reader, node: Node, path: str) -> tuple[str, ...] | None:
    fields = r.mapping(node, path, _PROBE_KEYS)
    if fields is None:
        return None

    def pattern(item: Node, item_path: str) -> str | None:
        text = r.text(item, item_path)
        if text is not None and not text.value.strip():
            r.error(item_path, "must be a non-empty glob pattern", item)
            return None
        return None if text is None else text.value.strip()

    patterns = r.items(fields.get("allow"), f"{path}.allow", pattern)
    return None if patterns is None else tuple(patterns)


def _read_fingerprints(r: _Reader, node: Node, path: str) -> Fingerprints | None:
    fields = r.mapping(node, path, _FINGERPRINT_KEYS)
    if fields is None:
        return None
    addresses = r.items(
        fields.get("dns_addresses"), f"{path}.dns_addresses", lambda n, p: _read_ip(r, n, p)
    )
    patterns = r.items(
        fields.get("http_body_patterns"),
        f"{path}.http_body_patterns",
        lambda n, p: _read_regex(r, n, p),
    )
    if addresses is None or patterns is None:
        return None
    return Fingerprints(dns_addresses=tuple(addresses), http_body_patterns=tuple(patterns))


def _read_regex(r: _Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    if not text.value:
        r.error(path, "an empty pattern would match every page", node)
        return None
    try:
        re.compile(text.value)
    except (re.error, RecursionError, OverflowError) as exc:
        r.error(path, f"{text.shown} is not a valid regular expression: {exc}", node)
        return None
    return text.value


def _read_window(r: _Reader, node: Node, path: str) -> tuple[float, ...] | None:
    """``window.activity``: 24 weights of people's activity, local hours 0..23."""
    fields = r.mapping(node, path, _WINDOW_KEYS)
    if fields is None or _is_null(fields.get("activity")):
        return None
    activity_path = f"{path}.activity"
    weights = r.items(fields["activity"], activity_path, lambda n, p: _read_weight(r, n, p))
    if weights is None:
        return None
    if len(weights) != 24:
        problem = f"needs 24 numbers (hours 0 to 23), not {len(weights)}"
        r.error(activity_path, problem, fields["activity"])
        return None
    if not any(weights):
        r.error(activity_path, "at least one hour must have some activity", fields["activity"])
        return None
    return tuple(weights)


def _read_weight(r: _Reader, node: Node, path: str) -> float | None:
    value = r.number(node, path)
    if value is not None and not (math.isfinite(value) and value >= 0):
        r.error(path, "must be a non-negative number", node)
        return None
    return value

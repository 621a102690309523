"""The smaller sections: ``version``, ``defaults``, ``storage``, ``probe``, ``fingerprints``,
``window``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

from yaml.nodes import Node, ScalarNode

from probes.config.fields import read_ca_file, read_ip
from probes.config.fpfiles import read_fingerprint_files
from probes.config.reader import Reader
from probes.config.yamlload import INT, is_null, kind_of
from probes.defaults import MAX_BODY_BYTES_LIMIT, MAX_BODY_HEAD_BYTES
from probes.model import Defaults, Fingerprints, Storage

_DEFAULTS_KEYS = (
    "interval", "timeout", "ca_file", "throttle_ratio", "max_body_bytes", "body_head_bytes",
)  # fmt: skip
_STORAGE_KEYS = ("dir", "retention")
_PROBE_KEYS = ("allow",)
_FINGERPRINT_KEYS = ("dns_addresses", "http_body_patterns", "files")
_WINDOW_KEYS = ("activity",)

T = TypeVar("T")


def read_version(r: Reader, node: Node | None, root: Node) -> None:
    if node is None:
        r.error("version", "is required: write version: 1 at the top", root)
    elif not (isinstance(node, ScalarNode) and node.tag == INT):
        r.error("version", f"must be the number 1, not {kind_of(node)}", node)
    elif (number := r.integer(node, "version")) is not None and number != 1:
        r.error("version", f"unsupported version {number}: this lifeline reads version: 1", node)


def read_defaults(r: Reader, node: Node, path: str) -> Defaults | None:
    fields = r.mapping(node, path, _DEFAULTS_KEYS)
    if fields is None:
        return None
    base = Defaults()

    def given(key: str, read: Callable[[Node, str], T | None], default: T) -> T | None:
        node = fields.get(key)
        return default if is_null(node) else read(node, f"{path}.{key}")  # type: ignore[arg-type]

    interval = given("interval", r.duration, base.interval)
    timeout = given("timeout", r.duration, base.timeout)
    ca_file = given("ca_file", lambda n, p: read_ca_file(r, n, p), None)
    ratio = given("throttle_ratio", lambda n, p: _read_ratio(r, n, p), base.throttle_ratio)
    body = given("max_body_bytes", lambda n, p: _read_body_limit(r, n, p), base.max_body_bytes)
    head = given("body_head_bytes", lambda n, p: _read_head_limit(r, n, p), base.body_head_bytes)
    if interval is None or timeout is None:
        return None
    if timeout > interval:
        _timeout_too_long(r, timeout, interval, fields, path)
        return None
    if ratio is None or body is None or head is None:
        return None
    if ca_file is None and not is_null(fields.get("ca_file")):
        return None
    return Defaults(
        interval=interval,
        timeout=timeout,
        ca_file=ca_file,
        throttle_ratio=ratio,
        max_body_bytes=body,
        body_head_bytes=head,
    )


def _timeout_too_long(
    r: Reader, timeout_s: float, interval_s: float, fields: dict[str, Node], path: str
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


def _read_ratio(r: Reader, node: Node, path: str) -> float | None:
    value = r.number(node, path)
    if value is not None and not 0 < value < 1:
        r.error(path, f"{value:g} must be between 0 and 1 (exclusive), e.g. 0.25", node)
        return None
    return value


def _read_body_limit(r: Reader, node: Node, path: str) -> int | None:
    value = r.integer(node, path)
    if value is not None and not 0 < value <= MAX_BODY_BYTES_LIMIT:
        r.error(path, f"{value} must be between 1 and {MAX_BODY_BYTES_LIMIT} (64 MiB)", node)
        return None
    return value


def _read_head_limit(r: Reader, node: Node, path: str) -> int | None:
    value = r.integer(node, path)
    if value is not None and not 0 <= value <= MAX_BODY_HEAD_BYTES:
        r.error(path, f"{value} must be between 0 and {MAX_BODY_HEAD_BYTES} (1 MiB)", node)
        return None
    return value


def read_storage(r: Reader, node: Node, path: str) -> Storage | None:
    fields = r.mapping(node, path, _STORAGE_KEYS)
    if fields is None:
        return None
    base = Storage()
    directory: str | None = base.dir
    retention: float | None = base.retention
    if not is_null(fields.get("dir")):
        text = r.text(fields["dir"], f"{path}.dir")
        directory = None if text is None else text.value
        if text is not None and not text.value.strip():
            r.error(f"{path}.dir", "must be a directory name", fields["dir"])
            directory = None
    if not is_null(fields.get("retention")):
        retention = r.duration(fields["retention"], f"{path}.retention")
    if directory is None or retention is None:
        return None
    return Storage(dir=directory, retention=retention)


def read_probe(r: Reader, node: Node, path: str) -> tuple[str, ...] | None:
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


def read_fingerprints(r: Reader, node: Node, path: str) -> Fingerprints | None:
    fields = r.mapping(node, path, _FINGERPRINT_KEYS)
    if fields is None:
        return None
    addresses = r.items(
        fields.get("dns_addresses"), f"{path}.dns_addresses", lambda n, p: read_ip(r, n, p)
    )
    patterns = r.items(
        fields.get("http_body_patterns"),
        f"{path}.http_body_patterns",
        lambda n, p: _read_regex(r, n, p),
    )
    files = read_fingerprint_files(r, fields.get("files"), f"{path}.files")
    if addresses is None or patterns is None or files is None:
        return None
    paths, rows = files
    return Fingerprints(
        dns_addresses=tuple(addresses), http_body_patterns=tuple(patterns), rows=rows, files=paths
    )


def _read_regex(r: Reader, node: Node, path: str) -> str | None:
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


def read_window(r: Reader, node: Node, path: str) -> tuple[float, ...] | None:
    """``window.activity``: 24 weights of people's activity, local hours 0..23."""
    fields = r.mapping(node, path, _WINDOW_KEYS)
    if fields is None or is_null(fields.get("activity")):
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


def _read_weight(r: Reader, node: Node, path: str) -> float | None:
    value = r.number(node, path)
    if value is not None and not (math.isfinite(value) and value >= 0):
        r.error(path, "must be a non-negative number", node)
        return None
    return value

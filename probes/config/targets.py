"""``services:`` and ``canaries:``: the targets to measure, as URLs or ``{url, ...}`` mappings."""

from __future__ import annotations

import re
from collections.abc import Callable

from yaml.nodes import MappingNode, Node, SequenceNode

from probes.config.fields import (
    check_unique_names,
    normal_ip,
    read_name,
    redact_userinfo,
    required,
    required_list,
)
from probes.config.reader import Reader, Text
from probes.config.yamlload import is_null
from probes.model import CANARY_SERVICE, Service, Target, redact_url

_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_SERVICE_KEYS = ("name", "targets")
_TARGET_KEYS = ("url", "expect_status", "throughput")


def _read_target(r: Reader, node: Node, path: str) -> Target | None:
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
    if not is_null(fields.get("expect_status")):
        statuses = r.items(fields["expect_status"], f"{path}.expect_status", _status_reader(r))
    if not is_null(fields.get("throughput")):
        throughput = r.boolean(fields["throughput"], f"{path}.throughput")
    url_node = fields.get("url")
    if is_null(url_node):
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


def _status_reader(r: Reader) -> Callable[[Node, str], int | None]:
    def read(node: Node, path: str) -> int | None:
        value = r.integer(node, path)
        if value is not None and not 100 <= value <= 599:
            r.error(path, f"{value} is not an HTTP status (100-599)", node)
            return None
        return value

    return read


def _target_url(
    r: Reader, node: Node, path: str, statuses: tuple[int, ...], throughput: bool
) -> Target | None:
    text = r.text(node, path)
    if text is None:
        return None
    url = text.value.strip()
    shown = redact_userinfo(text.shown)
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


def _target_problem(message: str, url: str, text: Text, shown: str) -> str:
    """Target.parse's sentence, with the URL as it may be shown (no password, no secret)."""
    for quoted in (repr(url), repr(redact_url(url))):
        if quoted in message:
            return message.replace(quoted, shown)
    if "@" in url or text.shown != repr(text.value):  # the message may quote part of a secret
        return f"{shown}: not a valid URL"
    return f"{shown}: {message}"


def _host_problem(host: str) -> str | None:
    if normal_ip(host) is not None:
        return None
    if not host.isascii():
        return "write an internationalized host name in its xn-- (punycode) form"
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        return f"{host!r} is not a valid host name"
    return None


def _read_targets(r: Reader, node: Node, path: str) -> tuple[Target, ...] | None:
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


def read_canaries(r: Reader, node: Node, path: str) -> tuple[Target, ...] | None:
    return _read_targets(r, node, path)


def read_services(r: Reader, node: Node | None, root: Node) -> tuple[Service, ...] | None:
    elements = required_list(r, node, root, "services", "service")
    if elements is None:
        return None
    services = [_read_service(r, e, f"services[{i}]") for i, e in enumerate(elements)]
    unique = check_unique_names(r, elements, "services")
    if not unique or any(s is None for s in services):
        return None
    return tuple(s for s in services if s is not None)


def _read_service(r: Reader, node: Node, path: str) -> Service | None:
    fields = r.mapping(node, path, _SERVICE_KEYS)
    if fields is None:
        return None
    name = required(r, fields, "name", path, node, read_name)
    if name == CANARY_SERVICE:
        r.error(
            f"{path}.name",
            f"{name!r} is reserved for the canaries: list canary targets under canaries:",
            fields["name"],
        )
        name = None
    targets = required(r, fields, "targets", path, node, _read_targets)
    if targets is not None and not targets:
        r.error(f"{path}.targets", "at least one target is required", fields["targets"])
        return None
    if name is None or targets is None:
        return None
    return Service(name=name, targets=targets)

"""Field readers that several sections share: names, IP addresses, ``host:port``, CA files,
required fields and lists, unique names."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode

from probes.config.reader import Reader
from probes.config.yamlload import is_null

#: A CA bundle larger than this is surely not one (and we do not read /dev/zero).
_MAX_CA_FILE_BYTES = 16 * 1024 * 1024
_NAME = re.compile(r"[a-z0-9_-]+\Z")

T = TypeVar("T")


def required(
    r: Reader,
    fields: dict[str, Node],
    key: str,
    path: str,
    parent: Node,
    read: Callable[[Reader, Node, str], T | None],
) -> T | None:
    node = fields.get(key)
    if is_null(node):
        r.error(f"{path}.{key}", "is required", node or parent)
        return None
    assert node is not None
    return read(r, node, f"{path}.{key}")


def required_list(
    r: Reader, node: Node | None, root: Node, path: str, noun: str
) -> list[Node] | None:
    """The elements of a required, non-empty top-level list."""
    if is_null(node):
        r.error(path, f"at least one {noun} is required", node or root)
        return None
    assert node is not None
    elements = r.sequence(node, path)
    if elements is not None and not elements:
        r.error(path, f"at least one {noun} is required", node)
        return None
    return elements


def check_unique_names(r: Reader, elements: list[Node], path: str) -> bool:
    """Report every ``name:`` already used by an earlier element (judged as written)."""
    first: dict[str, int] = {}
    unique = True
    for i, element in enumerate(elements):
        node = field_node(element, "name")
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


def field_node(node: Node, key: str) -> Node:
    """The value node of ``key`` in a mapping node (for the line of an error), else the node."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return node


def read_name(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    if not _NAME.match(text.value):
        r.error(path, f"{text.shown} must be lower-case letters, digits, '_' or '-'", node)
        return None
    return text.value


def read_ip(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    address = normal_ip(text.value.strip())
    if address is None:
        r.error(path, f"{text.shown} is not an IP address", node)
    return address


def normal_ip(text: str) -> str | None:
    """The normalized form of an IP literal, or None if it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def host_port(text: str) -> tuple[str, int | None] | str:
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


def redact_userinfo(shown: str) -> str:
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", shown)


def read_ca_file(r: Reader, node: Node, path: str) -> str | None:
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

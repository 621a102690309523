"""``vantages:``: where lifeline measures from, and the remote agents that measure some of them."""

from __future__ import annotations

import zoneinfo

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from probes.config.fields import (
    check_unique_names,
    field_node,
    host_port,
    normal_ip,
    read_ca_file,
    read_ip,
    read_name,
    redact_userinfo,
    required,
    required_list,
)
from probes.config.proxies import read_proxy
from probes.config.reader import Reader
from probes.config.resolvers import read_resolver
from probes.config.yamlload import is_null
from probes.defaults import MAX_DNS_WINDOW_S
from probes.interfaces import interface_exists, supported
from probes.model import Agent, ResolverSpec, SourceAddress, Vantage

_VANTAGE_KEYS = (
    "name", "control", "resolver", "proxy", "source_address", "country", "timezone", "agent",
    "dns_window", "asn", "network_name", "connect_every_address",
)  # fmt: skip
_AGENT_KEYS = ("url", "vantage", "username", "password", "ca_file")
_SOURCE_KEYS = ("ipv4", "ipv6", "interface")
#: IFNAMSIZ less its NUL: the longest interface name Linux accepts.
_MAX_INTERFACE_NAME = 15
#: What a vantage measured by a remote agent cannot have: the agent's own config has them.
_LOCAL_PATH_KEYS = ("resolver", "proxy", "source_address", "dns_window", "connect_every_address")


def read_vantages(r: Reader, node: Node | None, root: Node) -> tuple[Vantage, ...] | None:
    elements = required_list(r, node, root, "vantages", "vantage")
    if elements is None:
        return None
    vantages = [_read_vantage(r, e, f"vantages[{i}]") for i, e in enumerate(elements)]
    unique = check_unique_names(r, elements, "vantages")
    controls = [i for i, e in enumerate(elements) if r.is_true(field_node(e, "control"))]
    for i in controls[1:]:
        r.error(
            f"vantages[{i}].control",
            f"only one vantage can be the control; vantages[{controls[0]}] already is",
            field_node(elements[i], "control"),
        )
    if not unique or len(controls) > 1 or any(v is None for v in vantages):
        return None
    return tuple(v for v in vantages if v is not None)


def _read_vantage(r: Reader, node: Node, path: str) -> Vantage | None:
    fields = r.mapping(node, path, _VANTAGE_KEYS)
    if fields is None:
        return None
    ok = True
    name = required(r, fields, "name", path, node, read_name)
    values: dict[str, object] = {}
    agent_node = fields.get("agent")
    if is_null(agent_node):
        resolver = required(r, fields, "resolver", path, node, read_resolver)
    else:  # measured by a remote agent: no resolver or path here
        assert agent_node is not None
        agent = _read_agent(r, agent_node, f"{path}.agent", name or "")
        ok = _no_local_path(r, fields, path) and agent is not None
        resolver = None if agent is None else ResolverSpec(kind="agent", url=agent.url)
        values["agent"] = agent
    if "source_address" in fields:
        fields["source"] = fields.pop("source_address")
    for key, read in (
        ("control", lambda n, p: r.boolean(n, p)),
        ("proxy", lambda n, p: read_proxy(r, n, p)),
        ("source", lambda n, p: _read_source(r, n, f"{path}.source_address")),
        ("country", lambda n, p: _read_country(r, n, p)),
        ("timezone", lambda n, p: _read_timezone(r, n, p)),
        ("asn", lambda n, p: _read_asn(r, n, p)),
        ("network_name", lambda n, p: _read_network_name(r, n, p)),
        ("dns_window", lambda n, p: _read_dns_window(r, n, p)),
        ("connect_every_address", lambda n, p: r.boolean(n, p)),
    ):
        if not is_null(fields.get(key)):
            values[key] = read(fields[key], f"{path}.{key}")
            ok = ok and values[key] is not None
    if not ok or name is None or resolver is None:
        return None
    return Vantage(name=name, resolver=resolver, **values)  # type: ignore[arg-type]


def _read_source(r: Reader, node: Node, path: str) -> SourceAddress | None:
    """``source_address``: an address, a list of one per family, or ``{ipv4, ipv6}`` /
    ``{interface}``.

    A bare name is not read as an interface (``eth0`` is more often a typo for an
    address than it seems): ``{interface: eth0}`` says it.
    """
    if isinstance(node, SequenceNode):
        return _read_source_list(r, node, path)
    if not isinstance(node, MappingNode):
        address = read_ip(r, node, path)
        if address is None:
            return None
        return SourceAddress(**{_family_key(address): address})
    fields = r.mapping(node, path, _SOURCE_KEYS)
    if fields is None:
        return None
    given = [key for key in _SOURCE_KEYS if not is_null(fields.get(key))]
    if not given:
        if len(fields) == len(node.value):  # (an unknown key has had its error)
            r.error(path, "names no address: give ipv4, ipv6 or interface", node)
        return None
    if "interface" in given:
        if len(given) > 1:
            r.error(
                path,
                "interface cannot be combined with ipv4 or ipv6: the interface's own "
                "addresses are used",
                node,
            )
            return None
        name = _read_interface(r, fields["interface"], f"{path}.interface")
        return None if name is None else SourceAddress(interface=name)
    values: dict[str, str] = {}
    for key in given:
        address = read_ip(r, fields[key], f"{path}.{key}")
        if address is None:
            return None
        if _family_key(address) != key:
            r.error(
                f"{path}.{key}", f"{address!r} is not an {_FAMILY_NAMES[key]} address", fields[key]
            )
            return None
        values[key] = address
    return SourceAddress(**values)


_FAMILY_NAMES = {"ipv4": "IPv4", "ipv6": "IPv6"}


def _family_key(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def _read_source_list(r: Reader, node: SequenceNode, path: str) -> SourceAddress | None:
    """``[192.0.2.2, 2001:db8::2]``: at most one address of each family."""
    if not node.value:
        r.error(path, "an empty list names no address: give one IPv4 and/or one IPv6 address", node)
        return None
    values: dict[str, str] = {}
    for i, element in enumerate(node.value):
        address = read_ip(r, element, f"{path}[{i}]")
        if address is None:
            return None
        key = _family_key(address)
        if key in values:
            r.error(
                f"{path}[{i}]",
                f"a second {_FAMILY_NAMES[key]} address ({address} after {values[key]}): "
                "a vantage binds one address per family",
                element,
            )
            return None
        values[key] = address
    return SourceAddress(**values)


def _read_interface(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    name = text.value.strip()
    if (
        not name
        or len(name) > _MAX_INTERFACE_NAME
        or "/" in name
        or not name.isprintable()
        or (any(c.isspace() for c in name))
    ):
        r.error(
            path,
            f"{text.shown} is not an interface name (at most 15 characters, no '/' or spaces)",
            node,
        )
        return None
    if not supported():
        r.error(
            path, "binding to an interface needs Linux here: give its addresses as ipv4/ipv6", node
        )
        return None
    if not interface_exists(name):
        r.error(path, f"there is no interface {text.shown} on this host", node)
        return None
    return name


def _no_local_path(r: Reader, fields: dict[str, Node], path: str) -> bool:
    """A vantage measured by an agent has no resolver or path of its own here."""
    clash = [key for key in _LOCAL_PATH_KEYS if not is_null(fields.get(key))]
    for key in clash:
        r.error(
            f"{path}.{key}",
            "cannot be combined with agent: the agent's own config says how its vantage "
            "resolves and connects",
            fields[key],
        )
    return not clash


def _read_agent(r: Reader, node: Node, path: str, vantage: str) -> Agent | None:
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
    url = required(r, fields, "url", path, node, _read_agent_url)
    texts: dict[str, str | None] = {}
    ok = url is not None
    for key in ("vantage", "username", "password"):
        if not is_null(fields.get(key)):
            read = read_name if key == "vantage" else _read_plain_text
            texts[key] = read(r, fields[key], f"{path}.{key}")
            ok = ok and texts[key] is not None
    if texts.get("password") is not None and texts.get("username") is None:
        r.error(f"{path}.password", "needs a username as well", fields["password"])
        ok = False
    ca_file = None
    if not is_null(fields.get("ca_file")):
        ca_file = read_ca_file(r, fields["ca_file"], f"{path}.ca_file")
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


def _read_plain_text(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    return None if text is None else text.value


def _read_agent_url(r: Reader, node: Node, path: str) -> str | None:
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
        split = host_port(netloc)
        if isinstance(split, str):
            problem = split
        elif normal_ip(split[0]) is None:
            problem = (
                "the agent's host must be an IP address: lifeline never asks the system "
                "resolver where an agent is"
            )
    if problem:
        r.error(path, f"{redact_userinfo(text.shown)}: {problem}", node)
        return None
    return scheme.lower() + "://" + rest


def _read_dns_window(r: Reader, node: Node, path: str) -> float | None:
    """A duration from 0 (off) to MAX_DNS_WINDOW_S: ``300ms``, ``0.5``, ``0``."""
    if isinstance(node, ScalarNode) and node.value.strip() in ("0", "0s", "0ms", "0.0"):
        return 0.0
    seconds = r.duration(node, path)
    if seconds is None:
        return None
    if seconds > MAX_DNS_WINDOW_S:
        r.error(
            path,
            f"{seconds:g}s is too long: a forged and a real DNS reply arrive within "
            f"a fraction of a second of each other (at most {MAX_DNS_WINDOW_S:g}s; 0 turns "
            "the listening off)",
            node,
        )
        return None
    return seconds


def _read_country(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    code = text.value.strip().upper()
    if not (len(code) == 2 and code.isascii() and code.isalpha()):
        r.error(path, f"{text.shown} must be a two-letter country code such as IR", node)
        return None
    return code


def _read_asn(r: Reader, node: Node, path: str) -> int | None:
    """``asn: 12880`` or ``asn: AS12880``: a 32-bit autonomous system number."""
    text = r.text(node, path)
    if text is None:
        return None
    raw = text.value.strip()
    digits = raw[2:] if raw[:2].upper() == "AS" else raw
    if not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) < 2**32:
        r.error(path, f"{text.shown} must be an autonomous system number such as AS12880", node)
        return None
    return int(digits)


def _read_network_name(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    name = text.value.strip()
    if not name or len(name) > 100 or not name.isprintable():
        r.error(path, f"{text.shown} must be 1 to 100 printable characters", node)
        return None
    return name


def _read_timezone(r: Reader, node: Node, path: str) -> str | None:
    text = r.text(node, path)
    if text is None:
        return None
    try:
        zoneinfo.ZoneInfo(text.value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        r.error(path, f"{text.shown} is not a known IANA time zone such as Asia/Tehran", node)
        return None
    return text.value

"""A vantage's ``resolver:``: system, plain DNS over UDP or TCP, DoT or DoH, by IP address."""

from __future__ import annotations

import re

from yaml.nodes import Node

from probes.config.fields import host_port, normal_ip
from probes.config.reader import Reader
from probes.model import ResolverSpec

_RESOLVER_SCHEMES = {"udp": 53, "tcp": 53, "tls": 853}


def read_resolver(r: Reader, node: Node, path: str) -> ResolverSpec | None:
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
    split = host_port(rest)
    if isinstance(split, str):
        return split
    host, port = split
    address = normal_ip(host)
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
    split = host_port(netloc)
    if isinstance(split, str):
        return split
    host, port = split
    address = normal_ip(host)
    if address is None:
        return (
            "the DoH server must be named by its IP address (e.g. https://9.9.9.9/dns-query), "
            "since lifeline never asks the system resolver where a resolver is"
        )
    return ResolverSpec(kind="https", host=address, port=port or 443, url=url)

"""A vantage's ``proxy:``: SOCKS5 or HTTP CONNECT by IP address; its password never shown."""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import unquote

from yaml.nodes import Node

from probes.config.fields import host_port, normal_ip
from probes.config.reader import Reader
from probes.config.yamlload import STR
from probes.model import Proxy

_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PROXY_SCHEMES = ("socks5", "http")


def read_proxy(r: Reader, node: Node, path: str) -> Proxy | None:
    """A proxy URL. Its password never appears in an error.

    When the URL is written out (``socks5://user:${PASS}@127.0.0.1:1080``), it is
    split first and substituted per part, so a password from the environment
    may hold any character; literal parts are percent-decoded.
    """
    raw = r.raw_text(node, path)
    if raw is None:
        return None
    template = raw.strip()
    substitutes = node.tag == STR and "${" in template
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
    split = host_port(hostport)
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
    if normal_ip(host) is None:
        return (
            "the proxy host {host} must be an IP address (write 127.0.0.1, not localhost): "
            "the proxy address must not depend on the system resolver"
        )
    return None

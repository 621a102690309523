"""The validated configuration, as the rest of lifeline sees it (CONTRACT §3).

These are plain frozen records. :mod:`probes.config` builds them from YAML and
guarantees every invariant stated here; nothing else constructs them from
user input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from probes.defaults import (
    DEFAULT_BODY_HEAD_BYTES,
    DEFAULT_DATA_DIR,
    DEFAULT_DNS_WINDOW_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RETENTION_S,
    DEFAULT_THROTTLE_RATIO,
    DEFAULT_TIMEOUT_S,
)

__all__ = [
    "CANARY_SERVICE",
    "Agent",
    "Config",
    "Defaults",
    "Fingerprints",
    "Proxy",
    "ResolverSpec",
    "Service",
    "SourceAddress",
    "Storage",
    "Target",
    "Vantage",
    "redact_url",
]

#: The pseudo-service under which canary measurements are reported.
CANARY_SERVICE = "canaries"

SCHEMES = ("https", "http", "tls", "tcp", "dns")
DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint, as a URL of one of the schemes of CONTRACT §1."""

    url: str
    scheme: str
    host: str  # lower-case name or IP literal (no brackets)
    port: int  # 0 for dns://
    path: str = "/"  # path + query, for http(s)
    expect_status: tuple[int, ...] = ()
    throughput: bool = False

    @property
    def host_is_ip(self) -> bool:
        return is_ip(self.host)

    @classmethod
    def parse(
        cls, url: str, *, expect_status: tuple[int, ...] = (), throughput: bool = False
    ) -> Target:
        """Parse a target URL; raises ValueError with a sentence naming what is wrong.

        Error texts never repeat credentials from the URL.
        """
        if not isinstance(url, str) or not url.strip():
            raise ValueError("a target must be a non-empty URL")
        url = url.strip()
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"malformed URL {redact_url(url)!r}: {exc}") from None
        shown = redact_url(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(
                f"unsupported scheme {scheme or '(none)'!r} in {shown!r}: use one of "
                + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if parts.username or parts.password:
            raise ValueError(f"credentials in a target URL are not allowed: {shown!r}")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise ValueError(f"no host in {shown!r}")
        if not _HOST_RE.fullmatch(host) and not is_ip(host):
            raise ValueError(f"bad host {host!r} in {shown!r}: use an ASCII name or an IP address")
        if port == 0:
            raise ValueError(f"port 0 in {shown!r}")
        if scheme in ("tls", "tcp") and port is None:
            raise ValueError(f"{scheme}:// targets need a port: {shown!r}")
        if scheme == "dns" and (port is not None or parts.path not in ("", "/")):
            raise ValueError(f"dns:// targets are a bare name: {shown!r}")
        if scheme == "dns" and is_ip(host):
            raise ValueError(f"dns:// needs a name, not an address: {shown!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(
            url=url,
            scheme=scheme,
            host=host,
            port=port if port is not None else DEFAULT_PORTS.get(scheme, 0),
            path=path,
            expect_status=tuple(expect_status),
            throughput=throughput,
        )


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def redact_url(url: str) -> str:
    """The URL without anything between '://' and an '@' (credentials)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url[:200]
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return (head + sep + authority + slash + tail)[:200]


def is_ip(host: str) -> bool:
    """True for an IP literal (v4 or v6, no brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ResolverSpec:
    """How a vantage resolves names.

    kind: "system" | "udp" (UDP, TCP on truncation) | "tcp" | "tls" (DoT) | "https" (DoH)
    | "agent" (the vantage's remote agent resolves; ``url`` is the agent's URL)
    """

    kind: str
    host: str = ""  # IP literal for udp/tcp/tls; the DoH URL's host for https
    port: int = 0
    url: str = ""  # DoH URL (kind "https")

    def __str__(self) -> str:
        if self.kind == "system":
            return "system"
        if self.kind in ("https", "agent"):
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy that TCP, TLS and HTTP of a vantage go through."""

    kind: str  # "socks5" | "http"
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def redacted(self) -> str:
        """The proxy URL without its password (safe for logs and exports)."""
        cred = f"{self.username}:***@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{cred}{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Agent:
    """A remote lifeline (`serve --agent`) that measures a vantage from where it runs.

    ``url`` is the agent's base URL (http or https, host an IP literal);
    ``vantage`` the vantage's name in the agent's own config.
    """

    url: str
    vantage: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class SourceAddress:
    """What a vantage binds its outgoing sockets to: one address per family, or an interface.

    With ``interface``, the addresses are the interface's own, read when the
    vantage dials (probes/interfaces.py), so a renumbered interface is
    followed. A family without an address here cannot be used by the vantage:
    its sockets are never sent out unbound along another path.
    """

    ipv4: str | None = None
    ipv6: str | None = None
    interface: str | None = None

    def __str__(self) -> str:
        if self.interface is not None:
            return f"interface {self.interface}"
        return ", ".join(a for a in (self.ipv4, self.ipv6) if a is not None)


@dataclass(frozen=True, slots=True)
class Vantage:
    name: str
    resolver: ResolverSpec
    control: bool = False
    proxy: Proxy | None = None
    source: SourceAddress | None = None  # ``source_address:`` in the config
    country: str | None = None
    timezone: str | None = None
    asn: int | None = None  # the vantage's network: its autonomous system number
    network_name: str | None = None  # and its operator's name (both recorded, for researchers)
    agent: Agent | None = None  # measured by a remote agent (docs/agents.md), not from here
    # seconds the DNS stage listens for further UDP replies after the first (0: off)
    dns_window: float = DEFAULT_DNS_WINDOW_S
    # after a failed measurement, connect once to every address of the target that the
    # TCP stage's race left untried (TCPStage.every_address)
    connect_every_address: bool = False

    @property
    def source_address(self) -> str | None:
        """The binding as a user reads it (``127.0.0.2``, ``192.0.2.2, 2001:db8::2``,
        ``interface eth0``), None when the vantage does not bind."""
        return None if self.source is None else str(self.source)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Defaults:
    interval: float = DEFAULT_INTERVAL_S
    timeout: float = DEFAULT_TIMEOUT_S
    ca_file: str | None = None
    throttle_ratio: float = DEFAULT_THROTTLE_RATIO
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: how much of the body's start the HTTP record keeps (``body_head``), for re-judging
    body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES


@dataclass(frozen=True, slots=True)
class Storage:
    dir: str = DEFAULT_DATA_DIR
    retention: float = DEFAULT_RETENTION_S  # seconds


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """Extra fingerprints from the config, added to the built-in ones."""

    dns_addresses: tuple[str, ...] = ()
    http_body_patterns: tuple[str, ...] = ()  # regular expressions
    #: rows of the fingerprint files (``fingerprints.files``), read when the config is
    rows: tuple[FingerprintRow, ...] = ()
    files: tuple[str, ...] = ()  # the files they came from (absolute paths)


@dataclass(frozen=True, slots=True)
class FingerprintRow:
    """One row of a fingerprint file in OONI's blocking-fingerprints CSV layout."""

    name: str
    location_found: str  # "body", "header.<name>" (lower case) or "dns"
    pattern_type: str  # "full", "prefix", "contains" or "regexp"
    pattern: str
    scope: str = ""  # "nat", "isp", "prod", "inst", "vbw"; "fp" marks a false positive
    origin: str = ""  # "<file>:<line>", for messages


@dataclass(frozen=True, slots=True)
class Config:
    vantages: tuple[Vantage, ...]
    services: tuple[Service, ...]
    defaults: Defaults = Defaults()
    canaries: tuple[Target, ...] = ()
    storage: Storage = Storage()
    probe_allow: tuple[str, ...] = ()
    fingerprints: Fingerprints = Fingerprints()
    # weight of people's activity by local hour 0..23 (`lifeline window`); None = built-in curve
    window_activity: tuple[float, ...] | None = None
    path: str | None = None  # the file it was loaded from
    #: values substituted from the environment (``${NAME}``): never shown in a log line
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def control(self) -> Vantage | None:
        for v in self.vantages:
            if v.control:
                return v
        return None

    def vantage(self, name: str) -> Vantage | None:
        for v in self.vantages:
            if v.name == name:
                return v
        return None

    def service(self, name: str) -> Service | None:
        for s in self.services:
            if s.name == name:
                return s
        return None

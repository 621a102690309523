"""What each built-in stage saw: one record type per stage (DNS, TCP, TLS, HTTP).

Every stage returns a record, never a bare bool: ``ok``, ``failure`` (None on
success, else a string of :mod:`probes.failures`), ``duration_s`` and what it
saw (:class:`StageRecord` is that common shape). The stage table
(:mod:`probes.stages`) names which record each stage returns; a new stage may
keep its record type in its own module instead of here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DNSAnswer",
    "DNSQuery",
    "DNSResponse",
    "DNSStage",
    "HTTPHop",
    "HTTPStage",
    "StageRecord",
    "TCPAttempt",
    "TCPStage",
    "TLSCertificate",
    "TLSStage",
]


class StageRecord(Protocol):
    """What every stage's record has: success, the failure string, the time it took."""

    @property
    def ok(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def duration_s(self) -> float: ...


# --- DNS ---------------------------------------------------------------------


@dataclass(slots=True)
class DNSAnswer:
    rtype: str  # "A", "AAAA", "CNAME"
    value: str
    ttl: int


@dataclass(slots=True)
class DNSResponse:
    """A further reply to a query, received after its first one (the listening window)."""

    rcode: str | None
    rcode_number: int | None = None
    answers: list[DNSAnswer] = field(default_factory=list)
    after_s: float = 0.0  # seconds after the query's first reply arrived


@dataclass(slots=True)
class DNSQuery:
    """One question (A or AAAA) to the vantage's resolver."""

    qtype: str
    ok: bool
    failure: str | None
    rcode: str | None  # "NOERROR", "NXDOMAIN", ... None when no reply came
    answers: list[DNSAnswer] = field(default_factory=list)
    duration_s: float = 0.0
    # the reply's rcode as a number (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, ...);
    # None when no reply came, for the "system" resolver, and in records older than it
    rcode_number: int | None = None
    # every further reply for this query's ID that arrived on the same socket within
    # the window after the first (UDP only; docs/data.md), in arrival order, bounded
    later_responses: list[DNSResponse] = field(default_factory=list)
    # a later reply's answers (or rcode) differ from the first's: on-path injection
    # (the forged answer arrives first, the real one after it)
    injected: bool = False


@dataclass(slots=True)
class DNSStage:
    ok: bool
    failure: str | None
    duration_s: float
    name: str
    resolver: str  # which resolver answered, as configured ("udp://127.0.0.1:53", "system", ...)
    addresses: list[str] = field(default_factory=list)  # A then AAAA, de-duplicated, in order
    queries: list[DNSQuery] = field(default_factory=list)
    skipped: bool = False  # True for IP-literal hosts: addresses came from the URL
    injection: bool = False  # some query was injected (DNSQuery.injected)
    # how long the stage kept listening for further replies after its answers were in
    # (not part of duration_s); None when it did not listen (not UDP, window 0, no reply)
    listen_s: float | None = None


# --- TCP ---------------------------------------------------------------------


@dataclass(slots=True)
class TCPAttempt:
    """One connection attempt of the Happy Eyeballs race (probes/tcp.py)."""

    address: str
    port: int
    ok: bool
    failure: str | None
    duration_s: float
    family: str | None = None  # "ipv4" | "ipv6" (None in records older than it)
    started_s: float | None = None  # when it started, seconds after the stage began
    # "connected", "failed" (the path's answer), "family_unavailable" (this vantage
    # cannot use the family: nothing was sent), "cancelled" (another attempt connected
    # first; failure "interrupted"); None in older records
    outcome: str | None = None


@dataclass(slots=True)
class TCPStage:
    ok: bool
    # when every attempt failed: the last failure of the path, or a local one
    # (address_family_not_supported, ...) when no attempt could leave this host
    failure: str | None
    duration_s: float
    attempts: list[TCPAttempt] = field(default_factory=list)  # in the order they started
    address: str | None = None  # the address that connected
    port: int = 0
    via_proxy: bool = False
    # family ("ipv4", "ipv6") -> why this vantage could not use it (no source address
    # of that family, no route for it here, ...): a local limitation, never blocking
    families_unavailable: dict[str, str] = field(default_factory=dict)
    # with the vantage's connect_every_address, after the measurement failed: one connect
    # to each address the race left unsettled (at most MAX_EVERY_ADDRESS, tcp.py)
    every_address: list[TCPAttempt] = field(default_factory=list)


# --- TLS ---------------------------------------------------------------------


@dataclass(slots=True)
class TLSCertificate:
    subject_cn: str | None = None
    san: list[str] = field(default_factory=list)
    issuer: str | None = None
    not_before: str | None = None  # RFC 3339
    not_after: str | None = None
    sha256: str | None = None  # fingerprint of the leaf, hex


@dataclass(slots=True)
class TLSStage:
    ok: bool
    failure: str | None
    duration_s: float
    address: str | None = None
    server_name: str | None = None
    version: str | None = None  # "TLSv1.3"
    cipher: str | None = None
    alpn: str | None = None
    certificate: TLSCertificate | None = None
    # bytes received from the server before the failure (tiny reads over
    # seconds are the mark of handshake throttling)
    bytes_received: int | None = None
    # the certificates the server presented, leaf first, each DER in base64 (OONI's
    # peer_certificates); at most MAX_CHAIN certificates and MAX_CHAIN_BYTES of DER
    # (tls.py); on Python before 3.13 read through the ssl module's private twin of
    # get_unverified_chain(), else the leaf alone. Empty after a failed handshake.
    chain: list[str] = field(default_factory=list)
    chain_truncated: bool = False  # the server presented more than the caps kept


# --- HTTP --------------------------------------------------------------------


@dataclass(slots=True)
class HTTPHop:
    """One redirect response: what it said and what came with it (bounded like the final one)."""

    url: str
    status: int | None
    location: str | None = None
    address: str | None = None  # the address this hop connected to
    # every response header (lower-case names, repeated ones joined by ", "), capped
    # (http.py: MAX_HEADER_VALUE per value, MAX_HEADERS_TOTAL in all); None in older records
    headers: dict[str, str] | None = None
    headers_truncated: bool = False  # some header value or header was cut by the caps
    title: str | None = None  # the <title> of the redirect's own body, if it had one
    body_length: int | None = None  # bytes of the redirect's body read (at most HOP_BODY_BYTES)
    body_sha256: str | None = None  # of those bytes


@dataclass(slots=True)
class HTTPStage:
    ok: bool
    failure: str | None
    duration_s: float
    url: str = ""  # the URL requested first
    final_url: str | None = None
    status: int | None = None
    # every response header, lower-case names, repeated ones joined by ", ", each value at
    # most MAX_HEADER_VALUE characters and MAX_HEADERS_TOTAL in all (http.py); records
    # older than that kept 12 headers of interest, 256 characters each
    headers: dict[str, str] = field(default_factory=dict)
    headers_truncated: bool = False  # some header value or header was cut by the caps
    body_length: int | None = None  # bytes after decompression, capped at max_body_bytes
    body_sha256: str | None = None
    body_truncated: bool = False  # stopped at max_body_bytes or at the deadline
    # the body's first defaults.body_head_bytes (64 KiB; 2 KiB in older records), decoded
    # leniently by the charset of the Content-Type or the page's <meta> (for re-judging)
    body_head: str | None = None
    # names of the block-page / look-alike signatures found anywhere in the body received
    # (and in the redirect hops' bodies), scanned as it arrived with the fingerprints in
    # force; None when the body was not scanned (no body, older records)
    body_signatures: list[str] | None = None
    body_false_positives: list[str] | None = None
    # the digest (FingerprintSet.digest) of the set those names were scanned with: judged
    # with that same set, the whole-body scan stands for the head (not matched again)
    body_scanned_with: str | None = None
    title: str | None = None
    redirects: list[HTTPHop] = field(default_factory=list)
    # the last redirect was not followed: its Location is a known block-page host or
    # address (lifeline never connects to a censor's server); that redirect is the response
    redirect_stopped: bool = False
    request_sent: bool = False  # the failure (if any) came after the request was written
    # throughput sample (only for throughput targets): bytes/s over the body transfer
    throughput_bps: float | None = None
    transfer_s: float | None = None

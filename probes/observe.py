"""What the classifier's rules look at: where a measurement stopped, and its DNS answers.

:class:`Case` is one classification's inputs, prepared once; :class:`Break` is
the first stage that failed (walking the stage table in order) or an
unexpected status. Pure functions over records, no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from probes.failures import LOCAL_FAILURES, Failure
from probes.fingerprints import FingerprintSet, normalize_address
from probes.records import DNSStage, HTTPStage, Measurement, TCPStage
from probes.stages import STAGES

__all__ = [
    "CERT_FAILURES",
    "MIN_SAMPLE_S",
    "STATUS",
    "Break",
    "Case",
    "addresses_of",
    "all_answers",
    "all_bogon",
    "answers_differ",
    "break_of",
    "clean_failure",
    "incomplete",
    "is_bogon",
    "is_throughput_sample",
    "local_limitation",
    "redirect_step",
    "says_no_such_name",
    "stage_label",
    "stage_order",
    "status_expected",
]

#: After the stages of the table, in measuring order: the response arriving with
#: a status outside expectations (the server was reached, so it is not a stage
#: failure).
STATUS = "status"


def stage_order(stage: str) -> int:
    """Where ``stage`` (a stage of the table, or "status") falls in measuring order."""
    return len(STAGES) if stage == STATUS else STAGES.names.index(stage)


def stage_label(stage: str) -> str:
    return "HTTP status" if stage == STATUS else STAGES[stage].label


#: TLS failures that say "this server is not the host" rather than "interrupted".
CERT_FAILURES = frozenset(
    {Failure.SSL_INVALID_HOSTNAME, Failure.SSL_UNKNOWN_AUTHORITY, Failure.SSL_INVALID_CERTIFICATE}
)


#: A throughput sample shorter than this (and not cut by the deadline) is noise:
#: a connection's slow start alone can make it look throttled.
MIN_SAMPLE_S = 0.5


@dataclass(frozen=True, slots=True)
class Break:
    """Where a measurement stopped working: the stage and its failure string."""

    stage: str  # a stage of the table, or "status"
    failure: str

    @property
    def index(self) -> int:
        return stage_order(self.stage)

    def short(self) -> str:
        if self.stage == "status":
            return self.failure
        return f"{self.failure} at {stage_label(self.stage)}"


@dataclass(frozen=True, slots=True)
class Case:
    """Everything one classification looks at, prepared once."""

    obs: Measurement
    brk: Break | None
    control: Measurement | None  # usable control measurement, else None
    ctl_brk: Break | None
    why_no_control: str  # clause used when control is None
    canaries: Sequence[Measurement]
    peers: Sequence[Measurement]
    fingerprints: FingerprintSet
    throttle_ratio: float
    is_control: bool


def break_of(m: Measurement) -> Break | None:
    """The first stage that failed, or an unexpected status, or None when it all worked.

    For a throughput target, an HTTP timeout after the status and some body
    arrived is a throughput sample (the budget ran out mid-body), not a failure.
    """
    stages = m.stages
    for stage in STAGES.names:
        rec = stages.get(stage)
        if rec is None or rec.ok:
            continue
        if isinstance(rec, HTTPStage) and is_throughput_sample(m, rec):
            continue
        return Break(stage, clean_failure(rec.failure))
    http = m.record(HTTPStage)
    if http is not None and http.status is not None and not status_expected(m, http.status):
        return Break("status", f"status {http.status}")
    return None


def is_throughput_sample(m: Measurement, http: HTTPStage) -> bool:
    return (
        m.throughput
        and http.failure == Failure.TIMEOUT
        and http.status is not None
        and (http.body_length or 0) > 0
    )


def incomplete(m: Measurement) -> str | None:
    """The last stage of the target's scheme when it is missing although nothing failed."""
    try:
        scheme = urlsplit(m.target).scheme.lower()
    except ValueError:
        return None
    last = STAGES.last_for_scheme(scheme)
    if last is None or last.name in m.stages:
        return None
    if any(not rec.ok for rec in m.stages.values()):
        return None
    return last.name


def status_expected(m: Measurement, status: int) -> bool:
    """Inside the target's ``expect_status``; without one, anything below 400."""
    if m.expect_status:
        return status in m.expect_status
    return status < 400


def addresses_of(dns: DNSStage | None) -> set[str]:
    if dns is None or not dns.ok:
        return set()
    return {normalize_address(a) for a in dns.addresses}


def all_answers(dns: DNSStage) -> list[str]:
    """Every address the resolver gave, from the stage and from each query's answers."""
    out = list(dns.addresses)
    for query in dns.queries:
        out += [a.value for a in query.answers if a.rtype in ("A", "AAAA")]
    return out


def answers_differ(obs: DNSStage | None, ctl: DNSStage | None) -> bool:
    """Both resolved (by DNS, not from an IP literal) and share no address."""
    if obs is None or ctl is None or obs.skipped or ctl.skipped:
        return False
    mine, theirs = addresses_of(obs), addresses_of(ctl)
    return bool(mine) and bool(theirs) and not mine & theirs


@functools.lru_cache(maxsize=8192)  # asked of every answer, measurement after measurement
def is_bogon(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def all_bogon(addresses: Iterable[str]) -> bool:
    listed = list(addresses)
    return bool(listed) and all(map(is_bogon, listed))


def clean_failure(text: str | None) -> str:
    """A failure or error string fit for one sentence: one line, bounded."""
    flat = " ".join((text or "").split()) or "unknown_failure: no detail"
    return flat[:157] + "..." if len(flat) > 160 else flat


def local_limitation(m: Measurement) -> str | None:
    """Why ``m`` failed because of this vantage alone, or None.

    The first failing stage failed only in ways this host causes: a failure of
    :data:`~probes.failures.LOCAL_FAILURES` (a socket that could not be made or
    bound: no source address of the family, one the host lacks), or a TCP
    stage whose every attempt could not use its family (``family_unavailable``:
    also no route of the family here). Nothing was sent, so nothing can have
    been blocked. The clause names the families and why.
    """
    brk = break_of(m)
    if brk is None or brk.stage == STATUS:
        return None
    tcp = m.record(TCPStage)
    if brk.stage == "tcp" and tcp is not None and tcp.attempts:
        if all(a.outcome == "family_unavailable" for a in tcp.attempts):
            return _families_text(tcp)
        return None
    if brk.failure in LOCAL_FAILURES:
        if brk.stage == "dns":
            return f"it cannot use its resolver's address family ({brk.failure} at DNS)"
        where = stage_label(brk.stage)
        return f"it cannot use the address family it needs ({brk.failure} at {where})"
    return None


def _families_text(tcp: TCPStage) -> str:
    names = {"ipv4": "IPv4", "ipv6": "IPv6"}
    families = sorted({names.get(a.family or "", "that family") for a in tcp.attempts})
    reasons = [clean_failure(text) for _, text in sorted(tcp.families_unavailable.items())]
    why = f" ({'; '.join(reasons)})" if reasons else ""
    addresses = ", ".join(dict.fromkeys(a.address for a in tcp.attempts))
    return (
        f"it cannot use {' or '.join(families)}{why}, and every address of the target "
        f"it got is {' or '.join(families)} ({addresses})"
    )


def says_no_such_name(dns: DNSStage | None) -> bool:
    """The resolver said the name does not exist (NXDOMAIN), not merely that it failed.

    A SERVFAIL, a refusal or a timeout is the resolver failing; an empty answer
    (NODATA) says the name exists. Only NXDOMAIN, for either question, says
    there is nothing to answer with.
    """
    if dns is None or dns.ok or dns.skipped:
        return False
    return dns.failure == Failure.DNS_NXDOMAIN or any(q.rcode == "NXDOMAIN" for q in dns.queries)


#: Failures at connecting that a connect itself reports (no TLS involved).
_CONNECT_FAILURES = frozenset(
    {Failure.CONNECTION_REFUSED, Failure.HOST_UNREACHABLE, Failure.NETWORK_UNREACHABLE}
)
#: What ends a connection that was made, before a request was written: over https,
#: the handshake is all that happens there.
_INTERRUPTED = frozenset({Failure.CONNECTION_RESET, Failure.EOF})


def redirect_step(http: HTTPStage) -> tuple[str, str] | None:
    """(stage, URL) when the HTTP stage failed reaching a redirect's target.

    A redirect is followed inside the HTTP stage: its host is resolved through
    the vantage's resolver, dialled and (for https) handshaken there. A failure
    that came before the request to it was written belongs to that step, not to
    HTTP: a ``dns_*`` failure to its DNS, an ``ssl_*`` one to its TLS, a refused or
    unreachable connect to its TCP, a reset or EOF to the TLS handshake (https)
    or the connect (http). A timeout there is not attributed: the record does
    not say which step hung, so it returns None and HTTP keeps it.
    """
    if http.ok or http.request_sent or not http.redirects or http.failure is None:
        return None
    last = http.redirects[-1]
    if last.location is None:
        return None
    try:
        url = urljoin(last.url, last.location)
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    failure = clean_failure(http.failure)
    if failure.startswith("dns_"):
        return "dns", url
    if failure.startswith("ssl_"):
        return "tls", url
    if failure in _CONNECT_FAILURES:
        return "tcp", url
    if failure in _INTERRUPTED:
        return ("tls" if scheme == "https" else "tcp"), url
    return None

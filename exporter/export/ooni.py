"""`export --format ooni`: a record as an OONI web_connectivity measurement (df-000, ts-017 0.4).

Every key comes from the record alone (never from a config in the working
directory): the base data format's keys here, the observations' parts
(queries, connects, handshakes, requests, the control) in
:mod:`exporter.export.oonikeys`. The HTTP comparisons (`body_proportion`,
`body_length_match`, `status_code_match`, `headers_match`, `title_match`) are
the classifier's own (:func:`probes.compare.http_similarity`), so what the
export reports is what the verdict was judged on. docs/data.md says what each
key holds and where it still differs from OONI Probe's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from typing import IO, Any

from exporter.export.formats import ExportOptions, RowWriter
from exporter.export.oonikeys import (
    Clock,
    ooni_control,
    ooni_queries,
    ooni_requests,
    ooni_tcp,
    ooni_tls,
    resolver_address,
)
from probes import __version__
from probes.compare import http_similarity
from probes.failures import Failure
from probes.observe import says_no_such_name
from probes.records import (
    SCHEMA,
    DNSStage,
    HTTPStage,
    Measurement,
    Result,
    TCPStage,
    TLSStage,
    Verdict,
)
from probes.timefmt import parse_rfc3339

__all__ = [
    "OONI_DATA_FORMAT",
    "OONI_TEST_VERSION",
    "dns_consistency",
    "ooni_record",
    "open_writer",
    "report_id",
]

#: The web_connectivity test_keys version whose fields we render (ts-017, the classic
#: algorithm OONI Probe ran as 0.4.x).
OONI_TEST_VERSION = "0.4.3"
OONI_DATA_FORMAT = "0.2.0"
#: The data format templates the test keys follow, and their versions (df-000 `extensions`).
_EXTENSIONS = {"dnst": 0, "httpt": 0, "netevents": 0, "tcpconnect": 0, "tlshandshake": 0}
_NO_CONTROL = "unknown_failure: no control measurement"
_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BLOCKING: dict[str, str | bool | None] = {
    Verdict.OK: False,
    Verdict.THROTTLED: False,
    Verdict.SERVICE_DOWN: False,  # ts-017's "website down": no blocking, not accessible
    Verdict.DNS_BLOCKED: "dns",
    Verdict.TCP_BLOCKED: "tcp_ip",
    Verdict.TLS_BLOCKED: "http-failure",
    Verdict.ANOMALY: "http-diff",
}

# the TLS part under its older name (tests and callers read the chain through it)
_ooni_tls = ooni_tls


def open_writer(out: IO[str], options: ExportOptions) -> RowWriter:
    countries = options.countries

    def write(result: Result) -> None:
        m = result.measurement
        rendered = ooni_record(result, country=m.country or countries.get(m.vantage))
        out.write(json.dumps(rendered, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")

    return write


def _utc(rfc3339: str) -> datetime:
    return datetime.fromtimestamp(parse_rfc3339(rfc3339), UTC)


def _host_of(address: str) -> str:
    """The IP of an 'ip:port' / '[v6]:port' address."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def report_id(m: Measurement, cc: str) -> str:
    """One report per vantage and UTC day, named as OONI's collector names reports.

    ``YYYYMMDDT000000Z_webconnectivity_<cc>_<asn>_n1_<16 letters>``: the day's
    start, the probe's country and AS number (0 unknown), and in place of the
    collector's random part 16 letters and digits of a SHA-256 of the vantage,
    the day, the country and the AS number, so the same store exports the same
    ids every time and two vantages never share one.
    """
    day = _utc(m.time).strftime("%Y%m%d")
    asn = m.asn or 0
    digest = hashlib.sha256(f"lifeline\n{m.vantage}\n{day}\n{cc}\n{asn}".encode()).digest()
    number = int.from_bytes(digest, "big")
    tag = []
    for _ in range(16):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        tag.append(_ALPHANUMERIC[digit])
    return f"{day}T000000Z_webconnectivity_{cc}_{asn}_n1_{''.join(tag)}"


def dns_consistency(m: Measurement, control: Measurement | None) -> str | None:
    """ts-017's dns_consistency from the answers, as far as the record can tell.

    ``consistent``: an IP literal (nothing to resolve); both lookups failed with
    NXDOMAIN; the probe's and the control's addresses overlap; or, when no
    bogon (an address that is not globally routable) came to the probe alone,
    the probe's TLS handshake for the host succeeded on the addresses it got
    (ts-017's optional rules: the addresses are good for the domain).
    ``inconsistent`` otherwise. None without a DNS stage or a control's. The
    records keep no AS numbers of the answers, so OONI's same-ASN rule cannot
    apply.
    """
    dns = m.record(DNSStage)
    if dns is None:
        return None
    if dns.skipped:
        return "consistent"
    c_dns = control.record(DNSStage) if control is not None else None
    if c_dns is None:
        return None
    if not dns.ok or not c_dns.ok:
        both = dns.failure == c_dns.failure == Failure.DNS_NXDOMAIN
        return "consistent" if both else "inconsistent"
    if set(dns.addresses) & set(c_dns.addresses):
        return "consistent"
    if any(_bogon(a) for a in set(dns.addresses) - set(c_dns.addresses)):
        return "inconsistent"
    tls = m.record(TLSStage)
    if tls is not None and tls.ok and (tls.server_name or dns.name) == dns.name:
        return "consistent"
    return "inconsistent"


def _bogon(address: str) -> bool:
    try:
        return not ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _comparisons(http: HTTPStage | None, control: Measurement | None) -> dict[str, Any]:
    """OONI's HTTP comparisons, the classifier's own; None where there is nothing to compare.

    ``body_proportion`` and ``body_length_match`` are None as well when a body
    length is unknown.
    """
    c_http = control.record(HTTPStage) if control is not None else None
    if http is None or c_http is None or not http.ok or not c_http.ok:
        return dict.fromkeys(
            ("body_proportion", "body_length_match", "status_code_match", "headers_match",
             "title_match")
        )  # fmt: skip
    same = http_similarity(http, c_http)
    return {
        "body_proportion": same.body_proportion,
        "body_length_match": None if same.body_proportion is None else same.body_length_match,
        "status_code_match": same.status_code_match,
        "headers_match": same.headers_match,
        "title_match": same.title_match,
    }


def _blocking(
    verdict: str, http: HTTPStage | None, control: Measurement | None = None
) -> str | bool | None:
    """OONI's `blocking` key for one of our verdicts (None where OONI cannot tell either).

    An ``anomaly`` is told apart by what made it: an HTTP failure that is not a
    censor's signature is OONI's "http-failure", answers for a name the control
    says does not exist are "dns", a differing page "http-diff".
    """
    failed = http is not None and not http.ok
    if verdict == Verdict.HTTP_BLOCKED:
        return "http-failure" if failed else "http-diff"
    if verdict == Verdict.ANOMALY:
        if failed:
            return "http-failure"
        if control is not None and says_no_such_name(control.record(DNSStage)):
            return "dns"
    return _BLOCKING.get(verdict)


def _accessible(
    verdict: str, http: HTTPStage | None, control: Measurement | None = None
) -> bool | None:
    """OONI's `accessible`: True when people get the page, False when blocked or down."""
    if verdict in (Verdict.OK, Verdict.THROTTLED):
        return True
    if verdict == Verdict.SERVICE_DOWN:
        return False
    return False if _blocking(verdict, http, control) not in (None, False) else None


def _http_failure(m: Measurement) -> str | None:
    """What kept the page from coming: the failure the web step would have met."""
    stages = (m.record(HTTPStage), m.record(TLSStage), m.record(TCPStage), m.record(DNSStage))
    return next((str(s.failure) for s in stages if s is not None and not s.ok), None)


def ooni_record(result: Result, *, country: str | None = None) -> dict[str, Any]:
    """A measurement record rendered as an OONI web_connectivity measurement (df-000)."""
    m, control = result.measurement, result.control
    dns, tcp, tls, http = (
        m.record(DNSStage),
        m.record(TCPStage),
        m.record(TLSStage),
        m.record(HTTPStage),
    )
    verdict = result.verdict.value
    engine, resolver = resolver_address(dns.resolver if dns is not None else "")
    resolver_ip = _host_of(resolver) if engine in ("udp", "tcp", "dot") else ""
    clock = Clock.of(m)
    test_keys: dict[str, Any] = {
        "agent": "redirect",  # redirects are followed
        "client_resolver": resolver_ip,
        "retries": None,
        "socksproxy": None,
        "network_events": [],
        "queries": ooni_queries(dns),
        "tcp_connect": ooni_tcp(tcp, clock.tcp, control),
        "tls_handshakes": ooni_tls(tls, tcp, clock.tls),
        "requests": ooni_requests(http, tcp, clock.http),
        "control": ooni_control(control),
        "control_failure": None if control is not None else _NO_CONTROL,
        "dns_experiment_failure": dns.failure if dns is not None else None,
        "http_experiment_failure": _http_failure(m),
        "dns_consistency": dns_consistency(m, control),
        **_comparisons(http, control),
        "blocking": _blocking(verdict, http, control),
        "accessible": _accessible(verdict, http, control),
        "lifeline_verdict": verdict,
        "lifeline_reason": result.reason,
    }
    when = _utc(m.time).strftime("%Y-%m-%d %H:%M:%S")
    cc = (m.country or country or "ZZ").upper()
    helpers = (
        {"backend": {"address": f"lifeline:{control.vantage}", "type": "lifeline"}}
        if control is not None
        else {}
    )
    return {
        "annotations": {
            "engine_name": "lifeline",
            "lifeline_schema": SCHEMA,
            "lifeline_service": m.service,
            "lifeline_vantage": m.vantage,
            "lifeline_verdict": verdict,
        },
        "data_format_version": OONI_DATA_FORMAT,
        "extensions": dict(_EXTENSIONS),
        "input": m.target,
        "measurement_start_time": when,
        "probe_asn": f"AS{m.asn or 0}",  # AS0: OONI's "unknown"
        "probe_cc": cc,
        "probe_ip": "127.0.0.1",  # OONI's "not disclosed"
        "probe_network_name": m.network_name or "",
        "report_id": report_id(m, cc),
        "resolver_asn": "AS0",  # not recorded
        "resolver_ip": resolver_ip,
        "resolver_network_name": "",
        "software_name": "lifeline",
        "software_version": result.version or __version__,
        "test_helpers": helpers,
        "test_keys": test_keys,
        "test_name": "web_connectivity",
        "test_runtime": float(m.duration_s or 0.0),
        "test_start_time": when,
        "test_version": OONI_TEST_VERSION,
    }

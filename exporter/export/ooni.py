"""`export --format ooni`: a record as an OONI web_connectivity-style measurement (df-000).

The HTTP comparisons (`body_length_match`, `status_code_match`, `headers_match`,
`title_match`) are the classifier's own (:func:`probes.compare.http_similarity`),
so what the export reports is what the verdict was judged on.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import IO, Any

from exporter.export.formats import ExportOptions, RowWriter
from probes import __version__
from probes.compare import http_similarity
from probes.records import (
    SCHEMA,
    DNSAnswer,
    DNSStage,
    HTTPStage,
    Measurement,
    Result,
    TCPStage,
    TLSStage,
    Verdict,
)
from probes.timefmt import parse_rfc3339

__all__ = ["OONI_DATA_FORMAT", "OONI_TEST_VERSION", "ooni_record", "open_writer"]

#: The web_connectivity test_keys version whose fields we render.
OONI_TEST_VERSION = "0.4.3"
OONI_DATA_FORMAT = "0.2.0"
_ENGINES = {"udp": "udp", "tcp": "tcp", "tls": "dot", "https": "doh", "system": "getaddrinfo"}
_BLOCKING: dict[str, str | bool | None] = {
    Verdict.OK: False,
    Verdict.THROTTLED: False,
    Verdict.DNS_BLOCKED: "dns",
    Verdict.TCP_BLOCKED: "tcp_ip",
    Verdict.TLS_BLOCKED: "http-failure",
    Verdict.ANOMALY: "http-diff",
}


def open_writer(out: IO[str], options: ExportOptions) -> RowWriter:
    countries = options.countries

    def write(result: Result) -> None:
        rendered = ooni_record(result, country=countries.get(result.measurement.vantage))
        out.write(json.dumps(rendered, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")

    return write


def _ooni_time(rfc3339: str) -> str:
    """OONI's measurement time format: UTC 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.fromtimestamp(parse_rfc3339(rfc3339), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _resolver_address(resolver: str) -> tuple[str, str]:
    """(engine, 'ip:port') of a resolver as recorded ('udp://127.0.0.1:53', 'system', DoH URL)."""
    kind, _, rest = resolver.partition("://")
    if not rest:
        return _ENGINES.get(resolver, resolver), ""
    if kind == "https":
        return "doh", resolver
    return _ENGINES.get(kind, kind), rest


def _host_of(address: str) -> str:
    """The IP of an 'ip:port' / '[v6]:port' address."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def _ooni_answer(answer: DNSAnswer) -> dict[str, Any]:
    key = {"A": "ipv4", "AAAA": "ipv6"}.get(answer.rtype, "hostname")
    return {"answer_type": answer.rtype, key: answer.value, "ttl": answer.ttl}


def _ooni_queries(dns: DNSStage | None) -> list[dict[str, Any]]:
    if dns is None or dns.skipped:
        return []
    engine, address = _resolver_address(str(dns.resolver))
    return [
        {
            "hostname": dns.name,
            "query_type": q.qtype,
            "engine": engine,
            "resolver_address": address,
            "failure": q.failure,
            "rcode": q.rcode,
            "answers": [_ooni_answer(a) for a in q.answers],
            "t0": 0.0,
            "t": float(q.duration_s or 0.0),
        }
        for q in dns.queries
    ]


def _ooni_tcp(tcp: TCPStage | None, start: float, control_ok: bool | None) -> list[dict[str, Any]]:
    out = []
    t = start
    for a in tcp.attempts if tcp is not None else ():
        duration = float(a.duration_s or 0.0)
        blocked = None if control_ok is None else (a.failure is not None and control_ok)
        out.append(
            {
                "ip": a.address,
                "port": a.port,
                "status": {"success": bool(a.ok), "failure": a.failure, "blocked": blocked},
                "t0": t,
                "t": t + duration,
            }
        )
        t += duration
    return out


def _ooni_tls(tls: TLSStage | None, tcp: TCPStage | None, start: float) -> list[dict[str, Any]]:
    if tls is None:
        return []
    port = (tcp.port if tcp is not None else 0) or 443
    address = tls.address
    where = f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"
    cert = tls.certificate
    return [
        {
            "address": where if address else None,
            "server_name": tls.server_name,
            "tls_version": tls.version,
            "cipher_suite": tls.cipher,
            "negotiated_protocol": tls.alpn,
            "failure": tls.failure,
            "peer_certificates": [{"format": "base64", "data": der} for der in tls.chain],
            "lifeline_certificate": dataclasses.asdict(cert) if cert is not None else None,
            "t0": start,
            "t": start + float(tls.duration_s or 0.0),
        }
    ]


def _ooni_requests(http: HTTPStage | None) -> list[dict[str, Any]]:
    """One entry per request of the redirect chain, last request first (as OONI lists them)."""
    if http is None:
        return []
    # a redirect not followed (to a known block-page host) is the final response itself
    hops = http.redirects[:-1] if http.redirect_stopped else http.redirects
    requests = [
        {
            "request": {"url": hop.url, "method": "GET", "headers": {}},
            "response": {
                "code": hop.status,
                "headers": {
                    **{k: v for k, v in (hop.headers or {}).items() if k != "location"},
                    "Location": hop.location,
                },
            },
            "failure": None,
        }
        for hop in hops
    ]
    final_url = http.final_url or http.url
    body = http.body_head
    length = http.body_length
    truncated = bool(http.body_truncated) or (
        body is not None and length is not None and len(body.encode()) < length
    )
    last: dict[str, Any] = {
        "request": {"url": final_url, "method": "GET", "headers": {}},
        "response": {
            "code": http.status,
            "headers": dict(http.headers),
            "body": body,
            "body_is_truncated": truncated,
            "body_length": length,
        },
        "failure": http.failure,
    }
    if hops and hops[-1].url == final_url:
        requests[-1] = last
    else:
        requests.append(last)
    return list(reversed(requests))


def _ooni_control(control: Measurement | None) -> dict[str, Any]:
    """The control measurement in the shape of OONI's test helper answer."""
    if control is None:
        return {}
    dns, tcp, http = control.record(DNSStage), control.record(TCPStage), control.record(HTTPStage)
    out: dict[str, Any] = {}
    if dns is not None:
        out["dns"] = {"failure": dns.failure, "addrs": list(dns.addresses)}
    if tcp is not None:
        out["tcp_connect"] = {
            f"{a.address}:{a.port}": {"status": bool(a.ok), "failure": a.failure}
            for a in tcp.attempts
        }
    if http is not None:
        out["http_request"] = {
            "body_length": http.body_length if http.body_length is not None else -1,
            "failure": http.failure,
            "title": http.title or "",
            "headers": dict(http.headers),
            "status_code": http.status if http.status is not None else -1,
        }
    return out


def _comparisons(http: HTTPStage | None, control: Measurement | None) -> dict[str, bool | None]:
    """OONI's HTTP comparisons, the classifier's own; None where there is nothing to compare.

    ``body_length_match`` is None as well when a body length is unknown.
    """
    c_http = control.record(HTTPStage) if control is not None else None
    if http is None or c_http is None or not http.ok or not c_http.ok:
        return dict.fromkeys(
            ("body_length_match", "status_code_match", "headers_match", "title_match")
        )
    same = http_similarity(http, c_http)
    return {
        "body_length_match": None if same.body_proportion is None else same.body_length_match,
        "status_code_match": same.status_code_match,
        "headers_match": same.headers_match,
        "title_match": same.title_match,
    }


def _blocking(verdict: str, http: HTTPStage | None) -> str | bool | None:
    """OONI's `blocking` key for one of our verdicts (None where OONI cannot tell either)."""
    if verdict == Verdict.HTTP_BLOCKED:
        return "http-failure" if http is not None and not http.ok else "http-diff"
    return _BLOCKING.get(verdict)


def _accessible(verdict: str, http: HTTPStage | None) -> bool | None:
    """OONI's `accessible`: True when people get the page, False when blocked, None when unknown."""
    if verdict in (Verdict.OK, Verdict.THROTTLED):
        return True
    return False if _blocking(verdict, http) not in (None, False) else None


def _dns_consistency(verdict: str, control: Measurement | None) -> str | None:
    c_dns = control.record(DNSStage) if control is not None else None
    if c_dns is None or not c_dns.ok:
        return None
    return "inconsistent" if verdict == Verdict.DNS_BLOCKED else "consistent"


def ooni_record(result: Result, *, country: str | None = None) -> dict[str, Any]:
    """A measurement record rendered as an OONI web_connectivity-style measurement (df-000)."""
    m, control = result.measurement, result.control
    dns, tcp, tls, http = (
        m.record(DNSStage),
        m.record(TCPStage),
        m.record(TLSStage),
        m.record(HTTPStage),
    )
    verdict = result.verdict.value
    engine, resolver = _resolver_address(dns.resolver if dns is not None else "")
    tcp_start = float((dns.duration_s if dns is not None else 0.0) or 0.0)
    tls_start = tcp_start + float((tcp.duration_s if tcp is not None else 0.0) or 0.0)
    control_tcp = control.record(TCPStage) if control is not None else None
    test_keys: dict[str, Any] = {
        "client_resolver": None,
        "queries": _ooni_queries(dns),
        "tcp_connect": _ooni_tcp(tcp, tcp_start, None if control_tcp is None else control_tcp.ok),
        "tls_handshakes": _ooni_tls(tls, tcp, tls_start),
        "requests": _ooni_requests(http),
        "control": _ooni_control(control),
        "control_failure": None if control is not None else "lifeline: no control measurement",
        "dns_experiment_failure": dns.failure if dns is not None else None,
        "http_experiment_failure": (http.failure if http is not None else None)
        or (tls.failure if tls is not None else None),
        "dns_consistency": _dns_consistency(verdict, control),
        **_comparisons(http, control),
        "blocking": _blocking(verdict, http),
        "accessible": _accessible(verdict, http),
        "lifeline_verdict": verdict,
        "lifeline_reason": result.reason,
    }
    when = _ooni_time(m.time)
    return {
        "data_format_version": OONI_DATA_FORMAT,
        "measurement_start_time": when,
        "test_start_time": when,
        "probe_asn": "AS0",
        "probe_cc": (country or "ZZ").upper(),
        "probe_ip": "127.0.0.1",
        "input": m.target,
        "test_name": "web_connectivity",
        "test_version": OONI_TEST_VERSION,
        "software_name": "lifeline",
        "software_version": result.version or __version__,
        "resolver_ip": _host_of(resolver) if engine in ("udp", "tcp", "dot") else "",
        "test_runtime": m.duration_s,
        "annotations": {
            "engine_name": "lifeline",
            "lifeline_schema": SCHEMA,
            "lifeline_service": m.service,
            "lifeline_vantage": m.vantage,
            "lifeline_verdict": verdict,
        },
        "test_keys": test_keys,
    }

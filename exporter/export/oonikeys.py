"""The observation parts of an OONI web_connectivity measurement, from one lifeline record.

One function per test template (ooni/spec data-formats): DNS queries (df-002),
TCP connects (df-005, with ts-017's ``blocked``), TLS handshakes (df-006), HTTP
requests (df-001), and the control in the shape of the web_connectivity test
helper's answer (ts-017). Types follow what OONI Probe writes: strings are
``""`` rather than null where OONI's are plain strings, a response's ``code``
is ``0`` when no response came. ``t0``/``t`` are seconds from the measurement's
start, the stages taken one after another (lifeline records each stage's
duration, not when it began).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from probes.failures import Failure
from probes.records import (
    DNSAnswer,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    TCPStage,
    TLSStage,
)

__all__ = [
    "RCODES",
    "Clock",
    "canonical_header",
    "endpoint",
    "ooni_control",
    "ooni_queries",
    "ooni_requests",
    "ooni_tcp",
    "ooni_tls",
    "resolver_address",
]

#: DNS reply codes by name (RFC 1035, 2136, 6891): the number df-002's ``rcode`` holds,
#: for records written before they kept the number itself.
RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
    "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADVERS": 16,
}  # fmt: skip
#: df-002 ``engine`` of each resolver kind lifeline records ("system" is getaddrinfo).
_ENGINES = {"udp": "udp", "tcp": "tcp", "tls": "dot", "https": "doh", "system": "system"}
#: The test helper's failure for a name that does not exist (ts-017's control answer).
TH_NXDOMAIN = "dns_name_error"
_TOR = {"exit_ip": None, "exit_name": None, "is_tor": False}


@dataclasses.dataclass(frozen=True, slots=True)
class Clock:
    """When each stage began, in seconds from the measurement's start (stages in sequence)."""

    tcp: float
    tls: float
    http: float

    @classmethod
    def of(cls, m: Measurement) -> Clock:
        dns, tcp, tls = m.record(DNSStage), m.record(TCPStage), m.record(TLSStage)
        t_tcp = _seconds(dns.duration_s if dns is not None else 0.0)
        t_tls = t_tcp + _seconds(tcp.duration_s if tcp is not None else 0.0)
        return cls(t_tcp, t_tls, t_tls + _seconds(tls.duration_s if tls is not None else 0.0))


def _seconds(value: float | None) -> float:
    return float(value or 0.0)


def endpoint(ip: str, port: int) -> str:
    """``ip:port``, an IPv6 address in brackets (``[2001:db8::1]:443``), as OONI keys them."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def canonical_header(name: str) -> str:
    """A header name as OONI Probe (Go) writes it: ``content-type`` -> ``Content-Type``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def resolver_address(resolver: str) -> tuple[str, str]:
    """(df-002 engine, resolver_address) of a recorded resolver ('udp://127.0.0.1:53', ...)."""
    kind, _, rest = resolver.partition("://")
    if not rest:
        return _ENGINES.get(resolver, resolver), ""
    if kind == "https":
        return "doh", resolver
    return _ENGINES.get(kind, kind), rest


def _answer(answer: DNSAnswer) -> dict[str, Any]:
    key = {"A": "ipv4", "AAAA": "ipv6"}.get(answer.rtype, "hostname")
    return {"answer_type": answer.rtype, key: answer.value, "ttl": answer.ttl}


def ooni_queries(dns: DNSStage | None) -> list[dict[str, Any]]:
    """df-002 queries: one per question asked (none for an IP literal: nothing was asked)."""
    if dns is None or dns.skipped:
        return []
    engine, address = resolver_address(str(dns.resolver))
    out = []
    for q in dns.queries:
        entry: dict[str, Any] = {
            "answers": [_answer(a) for a in q.answers],
            "engine": engine,
            "failure": q.failure,
            "hostname": dns.name,
            "query_type": q.qtype,
            "resolver_hostname": None,
            "resolver_port": None,
            "resolver_address": address,
            "t0": 0.0,
            "t": _seconds(q.duration_s),
            "tags": [],
        }
        number = q.rcode_number if q.rcode_number is not None else RCODES.get(q.rcode or "")
        if number is not None:
            entry["rcode"] = number  # an int (df-002 / OONI Probe); absent: no reply came
        out.append(entry)
    return out


def ooni_tcp(
    tcp: TCPStage | None, start: float, control: Measurement | None
) -> list[dict[str, Any]]:
    """df-005 connects; ``blocked`` (ts-017) where the control tried the same endpoint."""
    c_tcp = control.record(TCPStage) if control is not None else None
    known = {(a.address, a.port): a.ok for a in c_tcp.attempts} if c_tcp is not None else {}
    out = []
    t = start
    for a in tcp.attempts if tcp is not None else ():
        duration = _seconds(a.duration_s)
        if a.started_s is not None:  # raced (Happy Eyeballs): each attempt has its own start
            t = start + _seconds(a.started_s)
        status: dict[str, Any] = {"failure": a.failure, "success": bool(a.ok)}
        control_ok = known.get((a.address, a.port))
        if a.outcome in ("cancelled", "family_unavailable"):
            control_ok = None  # stopped by us, or never sent: says nothing of the path
        if control_ok is not None:
            status["blocked"] = a.failure is not None and control_ok
        out.append({"ip": a.address, "port": a.port, "status": status,
                    "t0": t, "t": t + duration, "tags": []})  # fmt: skip
        t += duration
    return out


def ooni_tls(tls: TLSStage | None, tcp: TCPStage | None, start: float) -> list[dict[str, Any]]:
    """df-006 handshakes: the one lifeline made, on the connection the TCP stage opened."""
    if tls is None:
        return []
    port = (tcp.port if tcp is not None else 0) or 443
    address = tls.address or (tcp.address if tcp is not None else None)
    cert = tls.certificate
    return [
        {
            "network": "tcp",
            "address": endpoint(address, port) if address else "",
            "cipher_suite": tls.cipher or "",
            "failure": tls.failure,
            "negotiated_protocol": tls.alpn or "",
            "no_tls_verify": False,  # lifeline always verifies (system trust plus ca_file)
            "peer_certificates": [{"data": der, "format": "base64"} for der in tls.chain],
            "server_name": tls.server_name or "",
            "t0": start,
            "t": start + _seconds(tls.duration_s),
            "tags": [],
            "tls_version": tls.version or "",
            "lifeline_certificate": dataclasses.asdict(cert) if cert is not None else None,
        }
    ]


def _port(url: str) -> int:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return port or (443 if parts.scheme.lower() == "https" else 80)


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def _request(url: str) -> dict[str, Any]:
    """What lifeline's record says of a request: its URL and Host (other headers not kept)."""
    host = _host(url)
    return {
        "body": "",
        "body_is_truncated": False,
        "headers_list": [["Host", host]] if host else [],
        "headers": {"Host": host} if host else {},
        "method": "GET",
        "tor": dict(_TOR),
        "x_transport": "tcp",
        "url": url,
    }


def _response(
    code: int | None, headers: dict[str, str], body: str | None = None, truncated: bool = False
) -> dict[str, Any]:
    named = {canonical_header(k): v for k, v in headers.items()}
    return {
        "body": body if body is not None else "",
        "body_is_truncated": truncated,
        "code": code or 0,  # 0: no response (OONI Probe's value)
        "headers_list": [[k, v] for k, v in named.items()],
        "headers": named,
    }


def _entry(
    url: str,
    response: dict[str, Any],
    failure: str | None,
    ip: str | None,
    span: tuple[float, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {"network": "tcp"}
    if ip:
        out["address"] = endpoint(ip, _port(url))
    out.update(failure=failure, request=_request(url), response=response,
               t0=span[0], t=span[1], tags=[])  # fmt: skip
    return out


def ooni_requests(
    http: HTTPStage | None, tcp: TCPStage | None, start: float
) -> list[dict[str, Any]]:
    """df-001 requests of the redirect chain, the last one first (as ts-017 orders them).

    Every request spans the whole HTTP stage (``t0``/``t``): lifeline times the
    stage, not each hop. A hop's ``address`` is the one its connection went to;
    the last request's is the TCP stage's when it went to the same host.
    """
    if http is None:
        return []
    span = (start, start + _seconds(http.duration_s))
    # a redirect not followed (to a known block-page host) is the final response itself
    hops = http.redirects[:-1] if http.redirect_stopped else http.redirects
    out = [
        _entry(hop.url, _response(hop.status, _hop_headers(hop)), None, hop.address, span)
        for hop in hops
    ]
    final_url = http.final_url or http.url
    body = http.body_head
    truncated = bool(http.body_truncated) or (
        body is not None and http.body_length is not None and len(body.encode()) < http.body_length
    )
    response = _response(http.status, http.headers, body, truncated)
    if http.body_length is not None:
        response["x_body_length"] = http.body_length  # the whole body's (OONI Probe's x_ key)
    same_host = _host(final_url).lower() == _host(http.url).lower()
    ip = tcp.address if tcp is not None and same_host else None
    if http.redirects and http.redirects[-1].url == final_url:
        ip = http.redirects[-1].address or ip
        out[-1] = _entry(final_url, response, http.failure, ip, span)
    else:
        out.append(_entry(final_url, response, http.failure, ip, span))
    return list(reversed(out))


def _hop_headers(hop: HTTPHop) -> dict[str, str]:
    """A redirect's headers as recorded (older records kept its Location alone)."""
    headers = {k: v for k, v in (hop.headers or {}).items() if k != "location"}
    if hop.location:
        headers["location"] = hop.location
    return headers


def ooni_control(control: Measurement | None) -> dict[str, Any]:
    """The control measurement in the shape of the web_connectivity test helper's answer."""
    if control is None:
        return {}
    dns, tcp = control.record(DNSStage), control.record(TCPStage)
    tls, http = control.record(TLSStage), control.record(HTTPStage)
    out: dict[str, Any] = {}
    if tcp is not None:
        out["tcp_connect"] = {
            endpoint(a.address, a.port): {"status": bool(a.ok), "failure": a.failure}
            for a in tcp.attempts
        }
    if tls is not None:
        where = tls.address or (tcp.address if tcp is not None else None)
        port = (tcp.port if tcp is not None else 0) or 443
        if where:
            out["tls_handshake"] = {
                endpoint(where, port): {
                    "server_name": tls.server_name or "", "status": bool(tls.ok),
                    "failure": tls.failure,
                }
            }  # fmt: skip
    if http is not None:
        named = {canonical_header(k): v for k, v in http.headers.items()}
        out["http_request"] = {
            "body_length": http.body_length if http.body_length is not None else -1,
            "failure": http.failure,
            "title": http.title or "",
            "headers": named,
            "status_code": http.status if http.status is not None else -1,
        }
    if dns is not None:
        failure = TH_NXDOMAIN if dns.failure == Failure.DNS_NXDOMAIN else dns.failure
        out["dns"] = {"failure": failure, "addrs": list(dns.addresses)}
    return out

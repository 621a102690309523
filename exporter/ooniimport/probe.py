"""The probe's observations (OONI ``test_keys``) as one lifeline :class:`Measurement`.

Along lifeline's own path: the probe's resolver, a connect to its answers, the
TLS handshake on the connection the page was fetched over, the redirect chain
of that fetch.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import urljoin, urlsplit

from probes.failures import Failure
from probes.fingerprints import normalize_address
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    TCPAttempt,
    TCPStage,
    TLSStage,
)
from probes.tls import MAX_CHAIN, MAX_CHAIN_BYTES, certificate_record

from .fields import (
    BODY_HEAD_BYTES,
    REDIRECTS,
    bytes_of,
    depth_of,
    duration_of,
    failure_of,
    header_map,
    host_of,
    is_ip,
    location_of,
    request_ip,
    split_endpoint,
    title_of,
)

_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_SYSTEM_ENGINES = frozenset({"system", "getaddrinfo", "go", ""})


def _answers(q: dict[str, Any]) -> list[DNSAnswer]:
    out = []
    for a in q.get("answers") or ():
        if not isinstance(a, dict):
            continue
        rtype = str(a.get("answer_type") or "")
        value = a.get("ipv4") if rtype == "A" else a.get("ipv6") if rtype == "AAAA" else None
        if value is None:
            value = a.get("hostname") or a.get("ipv4") or a.get("ipv6")
        if not rtype or value is None:
            continue
        ttl = a.get("ttl")
        out.append(DNSAnswer(rtype, str(value), ttl if isinstance(ttl, int) and ttl >= 0 else 0))
    return out


def _rcode(q: dict[str, Any], failure: str | None) -> tuple[str | None, int | None]:
    number = q.get("rcode")
    if isinstance(number, int) and not isinstance(number, bool):
        return _RCODES.get(number, str(number)), number
    if failure == Failure.DNS_NXDOMAIN:
        return "NXDOMAIN", None
    if failure is None or failure == Failure.DNS_NO_ANSWER:
        return "NOERROR", None
    return None, None


def _resolver(engine: str, q: dict[str, Any]) -> str:
    address = str(q.get("resolver_address") or q.get("resolver_hostname") or "")
    if engine in _SYSTEM_ENGINES:
        return "system"
    if engine == "doh":
        return address or "https://"
    scheme = {"udp": "udp", "tcp": "tcp", "dot": "tls"}.get(engine, engine)
    return f"{scheme}://{address}"


def _dns_stage(tk: dict[str, Any], host: str) -> DNSStage | None:
    """The probe's resolver's answers for the input's host (the system resolver when it asked)."""
    if is_ip(host):
        ip = normalize_address(host)
        return DNSStage(True, None, 0.0, host, "", addresses=[ip], skipped=True)
    queries = [
        q
        for q in tk.get("queries") or ()
        if isinstance(q, dict)
        and host_of(f"//{q.get('hostname') or ''}") == host
        and depth_of(q) == 0
    ]
    if not queries:
        return None
    engines = [str(q.get("engine") or "") for q in queries]
    engine = next((e for e in engines if e in _SYSTEM_ENGINES), engines[0])
    mine = [q for q, e in zip(queries, engines, strict=True) if e == engine]
    records: list[DNSQuery] = []
    for q in mine:
        failure = failure_of(q.get("failure"))
        answers = _answers(q)
        rcode, number = _rcode(q, failure)
        qtype = str(q.get("query_type") or "A").upper()
        duration = duration_of(q)
        for kind in ("A", "AAAA") if qtype not in ("A", "AAAA") else (qtype,):
            # getaddrinfo's ANY lookup: its A (and CNAME) answers under A, AAAA under AAAA
            mine_answers = [
                a
                for a in answers
                if a.rtype == kind or (kind == "A" and a.rtype not in ("A", "AAAA"))
            ]
            records.append(
                DNSQuery(
                    kind,
                    failure is None,
                    failure,
                    rcode,
                    mine_answers,
                    duration,
                    rcode_number=number,
                )
            )
    addresses: list[str] = []
    for kind in ("A", "AAAA"):
        for rec in records:
            for a in rec.answers:
                if a.rtype == kind and is_ip(a.value):
                    ip = normalize_address(a.value)
                    if ip not in addresses:
                        addresses.append(ip)
    failures = [rec.failure for rec in records if rec.failure]
    failure = None if addresses else (failures[0] if failures else Failure.DNS_NO_ANSWER)
    return DNSStage(
        failure is None, failure, max((q.duration_s for q in records), default=0.0), host,
        _resolver(engine, mine[0]), addresses=addresses, queries=records,
    )  # fmt: skip


def _chain(requests: list[dict[str, Any]], start_url: str) -> list[dict[str, Any]]:
    """The requests of the input's fetch in the order they were made, following Location."""
    if not requests:
        return []
    ordered = list(reversed(requests))  # OONI lists the last request first
    by_url: dict[str, list[dict[str, Any]]] = {}
    for r in ordered:
        by_url.setdefault(_url_key(str((r.get("request") or {}).get("url") or "")), []).append(r)
    first = (by_url.get(_url_key(start_url)) or [ordered[0]])[0]
    chain = [first]
    while len(chain) <= 20:
        cur = chain[-1]
        response = cur.get("response") or {}
        location = location_of(response)
        if response.get("code") not in REDIRECTS or not location:
            break
        url = urljoin(str((cur.get("request") or {}).get("url") or ""), location)
        nxt = [r for r in by_url.get(_url_key(url), []) if r not in chain]
        if not nxt:  # a Location the probe normalised otherwise: the request made next
            later = ordered[ordered.index(cur) + 1 :]
            nxt = [r for r in later if r not in chain][:1]
        if not nxt:
            break
        chain.append(nxt[0])
    return chain


def _url_key(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}?{parts.query}"


def _http_stage(
    tk: dict[str, Any], url: str, chain: list[dict[str, Any]], *, failure_after: str | None
) -> HTTPStage:
    record = HTTPStage(ok=True, failure=None, duration_s=0.0, url=url)
    if not chain:
        record.ok, record.failure = False, failure_after or Failure.HTTP_PROTOCOL_ERROR
        record.final_url = url
        return record
    for hop in chain[:-1]:
        response = hop.get("response") or {}
        code = response.get("code")
        record.redirects.append(
            HTTPHop(
                str((hop.get("request") or {}).get("url") or ""),
                code if isinstance(code, int) and 100 <= code <= 599 else None,
                location_of(response),
                request_ip(hop),
            )
        )
    last = chain[-1]
    response = last.get("response") or {}
    request = last.get("request") or {}
    final_url = str(request.get("url") or url)
    record.final_url = final_url
    code = response.get("code")
    status = code if isinstance(code, int) and 100 <= code <= 599 else None
    failure = failure_of(last.get("failure"))
    location = location_of(response)
    answered_redirect = False
    if failure is not None and status in REDIRECTS and location:
        # the redirect came and then its own request failed (a Location the client would
        # not follow, as lifeline refuses a public site's redirect into a private network):
        # the redirect is a hop, as lifeline's own record keeps it, and the failure came
        # after a request was answered
        record.redirects.append(HTTPHop(final_url, status, location, request_ip(last)))
        record.final_url = urljoin(final_url, location)
        status, response, answered_redirect = None, {}, True
    elif failure is None and status in REDIRECTS and location:
        # the redirect was not followed to a request: what ended it is the test's HTTP failure
        # (the next host's DNS, connect or TLS); a hop of its own in lifeline's record
        failure = failure_of(tk.get("http_experiment_failure"))
        if failure is not None:
            target = urljoin(final_url, location)
            record.redirects.append(HTTPHop(final_url, status, location, request_ip(last)))
            record.final_url = target
            status = None
            response = {}
    record.status = status
    body = bytes_of(response.get("body")) if response else None
    if body is not None and (response.get("body") is not None):
        truncated = bool(response.get("body_is_truncated"))
        # the whole body's length where the writer kept it (OONI Probe's, and lifeline's
        # own export, `x_body_length`); else what was recorded
        whole = response.get("x_body_length")
        known = isinstance(whole, int) and not isinstance(whole, bool) and whole >= len(body)
        record.body_length = whole if known else len(body)
        # a truncated body's hash is not the body's: unknown rather than wrong
        record.body_sha256 = None if truncated else hashlib.sha256(body).hexdigest()
        head = body[:BODY_HEAD_BYTES].decode("utf-8", errors="replace")
        record.body_head = head
        record.title = title_of(head)
        record.body_truncated = truncated
    record.headers = header_map(response.get("headers")) if response else {}
    record.duration_s = duration_of(last)
    if failure is not None:
        record.ok, record.failure = False, failure
        # A failure of the first request came once it was sent: the test's own
        # tcp_connect and tls_handshakes say how its connection went. A redirect
        # target's request carries its dial in it (web_connectivity 0.4 records the
        # DNS, connect and handshake of a hop only as that request's failure), so
        # for one that failed without a response it is inferred (docs/ooni.md).
        own = failure_of(last.get("failure")) is not None
        record.request_sent = own and (
            not record.redirects
            or answered_redirect
            or record.status is not None
            or _after_request(record.final_url or final_url, failure)
        )
    return record


#: Failures that interrupt an exchange (rather than name a step of the dial).
_INTERRUPTIONS = frozenset({Failure.CONNECTION_RESET, Failure.EOF, Failure.TIMEOUT})


def _after_request(url: str, failure: str) -> bool:
    """Whether a redirect target's failure, recorded without a response, came after its
    request: a reset, EOF or timeout at a plain-http target is taken as the censor acting
    on the request it read (the Host header); at an https target, and any failure that
    names a step of the dial (DNS, refused, TLS), as before the request was written."""
    return failure in _INTERRUPTIONS and urlsplit(url).scheme.lower() == "http"


def probe_measurement(m: dict[str, Any], tk: dict[str, Any], base: dict[str, Any]) -> Measurement:
    url = str(m["input"])
    parts = urlsplit(url)
    host = host_of(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    obs = Measurement(**base)
    dns = _dns_stage(tk, host)
    if dns is None:
        failure = failure_of(tk.get("dns_experiment_failure"))
        if failure is not None:
            obs.stages["dns"] = DNSStage(False, failure, 0.0, host, "system")
        else:
            obs.error = "the OONI measurement has no DNS lookup of the input's host"
        return obs
    obs.stages["dns"] = dns
    if not dns.ok:
        return obs
    wanted = set(dns.addresses)
    connects = [
        c
        for c in tk.get("tcp_connect") or ()
        if isinstance(c, dict) and c.get("port") == port and depth_of(c) == 0
        and normalize_address(str(c.get("ip") or "")) in wanted
    ]  # fmt: skip
    if not connects:
        return obs  # nothing connected to the resolver's answers: OONI went no further here
    attempts = [
        TCPAttempt(
            normalize_address(str(c.get("ip"))), port, bool((c.get("status") or {}).get("success")),
            None if (c.get("status") or {}).get("success")
            else failure_of((c.get("status") or {}).get("failure")) or Failure.TIMEOUT,
            duration_of(c),
        )
        for c in connects
    ]  # fmt: skip
    good = [a.address for a in attempts if a.ok]
    chain = _chain([r for r in tk.get("requests") or () if isinstance(r, dict)], url)
    via = request_ip(chain[0]) if chain else None
    handshakes = [
        h for h in tk.get("tls_handshakes") or () if isinstance(h, dict) and depth_of(h) == 0
    ]
    if via not in good:
        via = next(
            (e[0] for h in handshakes if (e := split_endpoint(h.get("address"))) and e[0] in good),
            good[0] if good else None,
        )
    tcp = TCPStage(
        bool(good), None if good else attempts[-1].failure, sum(a.duration_s for a in attempts),
        attempts=attempts, address=via, port=port,
    )  # fmt: skip
    obs.stages["tcp"] = tcp
    if not tcp.ok:
        return obs
    if scheme == "https":
        mine = [h for h in handshakes if split_endpoint(h.get("address")) == (via, port)]
        if not mine:
            mine = [h for h in handshakes if not h.get("address")]
        if mine:
            tls = _tls_stage(mine[0], via)
            obs.stages["tls"] = tls
            if not tls.ok:
                return obs
    if chain and via is not None and any(request_ip(r) for r in chain):
        first_ip = request_ip(chain[0])
        if first_ip is not None and first_ip != via:
            chain = []  # the page was fetched over another connection than this path's
    failure_after = failure_of(tk.get("http_experiment_failure"))
    if not chain and failure_after is None:
        return obs  # OONI made no request on this path and names no failure
    obs.stages["http"] = _http_stage(tk, url, chain, failure_after=failure_after)
    return obs


def _tls_stage(h: dict[str, Any], via: str | None) -> TLSStage:
    failure = failure_of(h.get("failure"))
    chain: list[str] = []
    truncated = False
    size = 0
    ders: list[bytes] = []
    for cert in h.get("peer_certificates") or ():
        der = bytes_of(cert) if isinstance(cert, dict) else None
        if not der:
            continue
        if len(chain) >= MAX_CHAIN or size + len(der) > MAX_CHAIN_BYTES:
            truncated = True
            break
        ders.append(der)
        chain.append(base64.b64encode(der).decode("ascii"))
        size += len(der)
    certificate = None
    if ders:
        try:
            certificate = certificate_record(ders[0])
        except ValueError:
            certificate = None
    return TLSStage(
        failure is None, failure, duration_of(h), address=via,
        server_name=h.get("server_name") or None, version=h.get("tls_version") or None,
        cipher=h.get("cipher_suite") or None, alpn=h.get("negotiated_protocol") or None,
        certificate=certificate, chain=chain, chain_truncated=truncated,
    )  # fmt: skip

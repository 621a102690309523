"""The test helper's ``control`` as the control's :class:`Measurement`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from probes.failures import Failure, unknown
from probes.fingerprints import normalize_address
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPStage,
    Measurement,
    TCPAttempt,
    TCPStage,
    TLSStage,
)

from .fields import endpoint, failure_of, header_map, host_of, is_ip, split_endpoint

#: The vantage name of OONI's test helper (the control of every imported record).
CONTROL_VANTAGE = "ooni-th"


def control_measurement(
    m: dict[str, Any], tk: dict[str, Any], base: dict[str, Any]
) -> Measurement | None:
    """The test helper's answer as the control's measurement; None when there is none."""
    ctl = tk.get("control")
    if not isinstance(ctl, dict) or not ctl or tk.get("control_failure"):
        return None
    url = str(m["input"])
    parts = urlsplit(url)
    host = host_of(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    out = Measurement(**{**base, "vantage": CONTROL_VANTAGE})
    dns = ctl.get("dns")
    if is_ip(host):
        out.stages["dns"] = DNSStage(
            True, None, 0.0, host, "", [normalize_address(host)], skipped=True
        )
    elif isinstance(dns, dict):
        listed = dns.get("addrs") or dns.get("ips") or ()  # "ips" in the 2016 test helper
        addrs = [normalize_address(a) for a in listed if is_ip(str(a))]
        names = [str(a) for a in listed if not is_ip(str(a))]
        failure = failure_of(dns.get("failure"))
        if failure is None and not addrs:
            failure = Failure.DNS_NO_ANSWER
        answers = [DNSAnswer("CNAME", n, 0) for n in names]
        answers += [DNSAnswer("AAAA" if ":" in a else "A", a, 0) for a in addrs]
        query = DNSQuery("A", failure is None, failure, None, answers)
        out.stages["dns"] = DNSStage(
            failure is None, failure, 0.0, host, "ooni-test-helper",
            addresses=[] if failure else addrs, queries=[query],
        )  # fmt: skip
        if failure:
            return out
    attempts: list[TCPAttempt] = []
    for key, status in (ctl.get("tcp_connect") or {}).items():
        where = split_endpoint(key)
        if where is None or where[1] != port or not isinstance(status, dict):
            continue
        ok = bool(status.get("status"))
        fail = None if ok else failure_of(status.get("failure")) or Failure.TIMEOUT
        attempts.append(TCPAttempt(where[0], port, ok, fail, 0.0))
    if attempts:
        # the test helper also connects to the probe's addresses: its own answers first,
        # as lifeline's control would have connected to them
        own = set(out.stages["dns"].addresses) if "dns" in out.stages else set()
        attempts.sort(key=lambda a: a.address not in own)
        good = [a.address for a in attempts if a.ok]
        out.stages["tcp"] = TCPStage(
            bool(good), None if good else attempts[-1].failure, 0.0, attempts=attempts,
            address=good[0] if good else None, port=port,
        )  # fmt: skip
        if not good:
            return out
    handshakes = ctl.get("tls_handshake")
    if scheme == "https" and isinstance(handshakes, dict) and handshakes:
        via = out.stages["tcp"].address if "tcp" in out.stages else None
        pick = handshakes.get(endpoint(via, port)) if via else None
        entry = pick if isinstance(pick, dict) else next(iter(handshakes.values()))
        if isinstance(entry, dict):
            ok = bool(entry.get("status"))
            fail = None if ok else failure_of(entry.get("failure")) or Failure.SSL_FAILED_HANDSHAKE
            out.stages["tls"] = TLSStage(
                ok, fail, 0.0, address=via, server_name=entry.get("server_name") or None
            )
            if not ok:
                return out
    http = ctl.get("http_request")
    if isinstance(http, dict) and http:
        code = http.get("status_code")
        status = code if isinstance(code, int) and 100 <= code <= 599 else None
        failure = failure_of(http.get("failure"))
        if failure is None and status is None:
            failure = unknown("the test helper got no HTTP response")
        length = http.get("body_length")
        out.stages["http"] = HTTPStage(
            failure is None, failure, 0.0, url=url, final_url=url, status=status,
            headers=header_map(http.get("headers")),
            body_length=length if isinstance(length, int) and length >= 0 else None,
            title=" ".join(str(http.get("title") or "").split()) or None,
        )  # fmt: skip
    return out

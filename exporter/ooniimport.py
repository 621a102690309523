"""`lifeline import ooni`: OONI web_connectivity measurements as lifeline records.

Reading (:func:`read_file`): a file holds one OONI measurement (JSON), many
(JSONL), either gzipped, or OONI API ``measurement_meta`` answers whose
``raw_measurement`` is the measurement as a JSON string or an object (also
inside a saved HTTP answer ``{"status": ..., "body": ...}``).

Mapping (:func:`to_measurements`): the probe's observations become one
:class:`~probes.records.Measurement` along lifeline's own path (the probe's
resolver, a connect to its answers, the TLS handshake on the connection the
page was fetched over, the redirect chain of that fetch); the test helper's
``control`` becomes the control's. What OONI recorded that the records
cannot hold is listed in docs/ooni.md.

Judging: with lifeline's classifier and built-in fingerprints, the call the
runner makes (:meth:`probes.judge.JudgingContext.judge`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import hashlib
import ipaddress
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from probes.failures import Failure, is_known, unknown
from probes.fingerprints import normalize_address
from probes.judge import JudgingContext
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    Result,
    TCPAttempt,
    TCPStage,
    TLSStage,
)
from probes.timefmt import rfc3339
from probes.tls import MAX_CHAIN, MAX_CHAIN_BYTES, certificate_record

__all__ = [
    "CONTROL_VANTAGE",
    "EXIT_ALL",
    "EXIT_SKIPPED",
    "EXIT_USAGE",
    "Imported",
    "Skipped",
    "agrees",
    "import_files",
    "read_file",
    "run_import",
    "summary_markdown",
    "to_measurements",
]

EXIT_ALL, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 2

#: The vantage name of OONI's test helper (the control of every imported record).
CONTROL_VANTAGE = "ooni-th"
#: How much of an imported body is kept as ``body_head`` (OONI keeps the body, we the head).
BODY_HEAD_BYTES = 65_536
MAX_HEADER_VALUE = 1024
_SCAN_TITLE = 65_536
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
_TITLE = re.compile(r"<title(?:\s[^>]{0,256})?>(.*?)</title", re.IGNORECASE | re.DOTALL)
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_SYSTEM_ENGINES = frozenset({"system", "getaddrinfo", "go", ""})

#: OONI failure strings (df-007, older probes' and the test helper's) that are
#: named differently in lifeline's vocabulary. Names lifeline shares pass as they are.
_FAILURES: dict[str, str] = {
    "dns_name_error": Failure.DNS_NXDOMAIN,  # the test helper's NXDOMAIN
    "android_dns_cache_no_data": Failure.DNS_NO_ANSWER,  # getaddrinfo's EAI_NODATA on Android
    "connection_refused_error": Failure.CONNECTION_REFUSED,
    "connection_reset_error": Failure.CONNECTION_RESET,
    "http_invalid_redirect_url": Failure.HTTP_BAD_REDIRECT,
    "http_invalid_redirect_location_host": Failure.HTTP_BAD_REDIRECT,
    "http_unexpected_redirect_url": Failure.HTTP_BAD_REDIRECT,
    "ssl_error": Failure.SSL_FAILED_HANDSHAKE,
}
#: Free text of an ``unknown_failure`` (or an older probe's message) that names a known failure.
_TEXT_FAILURES = (
    ("too many redirects", Failure.HTTP_TOO_MANY_REDIRECTS),
    ("certificate verify failed", Failure.SSL_INVALID_CERTIFICATE),
    ("no route to host", Failure.HOST_UNREACHABLE),
    ("network is unreachable", Failure.NETWORK_UNREACHABLE),
    ("connection refused", Failure.CONNECTION_REFUSED),
    ("connection reset", Failure.CONNECTION_RESET),
    ("i/o timeout", Failure.TIMEOUT),
)


class NotWebConnectivity(ValueError):
    """An object that is not a web_connectivity measurement (the sentence says what it is)."""


@dataclass(slots=True)
class Imported:
    """One OONI measurement judged by lifeline: the record, and where it came from."""

    source: str  # "FILE" or "FILE:N" (line N of a JSONL file)
    record: dict[str, Any]  # Result.to_dict() with its `ooni` block

    @property
    def verdict(self) -> str:
        return str(self.record["verdict"])


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    why: str


# --- reading ------------------------------------------------------------------


def read_file(path: str) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    """(source, OONI measurement) of every measurement in a file; a Skipped for what is not one.

    Raises OSError when the file cannot be read.
    """
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            yield path, Skipped(path, f"not a readable gzip file: {exc}")
            return
    text = data.decode("utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = _UNPARSED
    if whole is _UNPARSED:
        # a commented JSON file (whole lines starting with //), or JSONL
        uncommented = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("//")
        )
        try:
            whole = json.loads(uncommented)
        except ValueError:
            yield from _jsonl(path, text)
            return
    yield path, _measurement_or_skip(path, whole)


_UNPARSED = object()


def _jsonl(path: str, text: str) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        yield path, Skipped(path, "empty file")
        return
    out: list[tuple[str, dict[str, Any] | Skipped]] = []
    for n, line in lines:
        source = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((source, Skipped(source, f"not JSON ({exc.msg} at column {exc.colno})")))
            continue
        out.append((source, _measurement_or_skip(source, item)))
    if len(out) > 1 and all(
        isinstance(i, Skipped) and i.why.startswith("not JSON") for _, i in out
    ):
        yield path, Skipped(path, "neither JSON nor JSON lines")  # one message, not one a line
        return
    yield from out


def _measurement_or_skip(source: str, item: Any) -> dict[str, Any] | Skipped:
    try:
        return unwrap(item)
    except NotWebConnectivity as exc:
        return Skipped(source, str(exc))


def unwrap(item: Any) -> dict[str, Any]:
    """The raw OONI web_connectivity measurement in ``item`` (with the API's uid when known).

    Raises NotWebConnectivity saying what ``item`` is instead.
    """
    meta: dict[str, Any] = {}
    for _ in range(3):  # an HTTP answer around a measurement_meta around a measurement
        if not isinstance(item, dict):
            raise NotWebConnectivity(f"not an OONI measurement (a JSON {_kind(item)})")
        if "raw_measurement" in item:
            meta = item
            item = _json_value(item["raw_measurement"], "raw_measurement")
        elif "test_name" not in item and "body" in item and "status" in item:
            item = _json_value(item["body"], "body")
        else:
            break
    if not isinstance(item, dict):
        raise NotWebConnectivity(f"not an OONI measurement (a JSON {_kind(item)})")
    name = item.get("test_name")
    if name is None:
        hint = " (an object of test_keys alone?)" if "queries" in item or "control" in item else ""
        raise NotWebConnectivity(f"not an OONI measurement: no test_name{hint}")
    if name != "web_connectivity":
        raise NotWebConnectivity(f"an OONI {name!r} measurement, not web_connectivity")
    if not isinstance(item.get("input"), str) or not item["input"]:
        raise NotWebConnectivity("a web_connectivity measurement without an input URL")
    out = dict(item)
    if meta.get("measurement_uid") and not out.get("measurement_uid"):
        out["measurement_uid"] = meta["measurement_uid"]
    return out


def _json_value(value: Any, key: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise NotWebConnectivity(f"{key} is a string but not JSON ({exc.msg})") from None
    return value


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


# --- mapping --------------------------------------------------------------------


def failure_of(value: Any) -> str | None:
    """lifeline's failure string for an OONI failure (None for no failure)."""
    if value is None or value is False or value == "":
        return None
    text = str(value)
    if text in _FAILURES:
        return str(_FAILURES[text])
    if is_known(text) and not text.startswith("unknown_failure"):
        return text
    low = text.lower()
    for marker, failure in _TEXT_FAILURES:
        if marker in low:
            return failure
    if low.startswith("ssl_error"):
        return Failure.SSL_FAILED_HANDSHAKE
    detail = text.removeprefix("unknown_failure").lstrip(": ").strip()
    return unknown(detail or text)


def _time(text: Any) -> str:
    """RFC 3339 of OONI's 'YYYY-MM-DD HH:MM:SS' (UTC) or the API's ISO time."""
    if not isinstance(text, str) or not text:
        return "1970-01-01T00:00:00.000000Z"
    try:
        dt = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return "1970-01-01T00:00:00.000000Z"
    return rfc3339(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def _depth(entry: dict[str, Any]) -> int:
    for tag in entry.get("tags") or ():
        if isinstance(tag, str) and tag.startswith("depth="):
            try:
                return int(tag[6:])
            except ValueError:
                return 0
    return 0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _split_endpoint(text: Any) -> tuple[str, int] | None:
    if not isinstance(text, str) or not text:
        return None
    host, _, port = text.rpartition(":")
    try:
        return normalize_address(host.strip("[]")), int(port)
    except ValueError:
        return None


def _duration(entry: dict[str, Any]) -> float:
    t0, t = entry.get("t0"), entry.get("t")
    if isinstance(t0, (int, float)) and isinstance(t, (int, float)) and t >= t0:
        return float(t - t0)
    return 0.0


def _bytes_of(value: Any) -> bytes | None:
    """A body or header value: text, or OONI's {"format": "base64", "data": ...}."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return base64.b64decode(str(value.get("data") or ""), validate=False)
        except (binascii.Error, ValueError):
            return None
    return str(value).encode("utf-8", errors="surrogateescape")


def _text_of(value: Any) -> str:
    raw = _bytes_of(value)
    return raw.decode("utf-8", errors="replace") if raw is not None else ""


def _title(body: str) -> str | None:
    found = _TITLE.search(body[:_SCAN_TITLE])
    if found is None:
        return None
    import html

    return " ".join(html.unescape(found.group(1)).split())[:200] or None


def _headers(raw: Any) -> dict[str, str]:
    """All headers, lower-case names (a name that is not an HTTP token is dropped)."""
    out: dict[str, str] = {}
    if not isinstance(raw, dict):
        return out
    for name, value in raw.items():
        key = str(name).strip().lower()
        if not _HEADER_NAME.match(key):
            continue
        text = _text_of(value[0] if isinstance(value, list) and value else value)
        out[key] = text[:MAX_HEADER_VALUE]
    return out


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
    if _is_ip(host):
        ip = normalize_address(host)
        return DNSStage(True, None, 0.0, host, "", addresses=[ip], skipped=True)
    queries = [
        q
        for q in tk.get("queries") or ()
        if isinstance(q, dict) and _host(f"//{q.get('hostname') or ''}") == host and _depth(q) == 0
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
        duration = _duration(q)
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
                if a.rtype == kind and _is_ip(a.value):
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
        location = _location(response)
        if response.get("code") not in _REDIRECTS or not location:
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


def _location(response: dict[str, Any]) -> str | None:
    headers = response.get("headers")
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if str(name).lower() == "location":
            text = _text_of(value[0] if isinstance(value, list) and value else value)
            return text or None
    return None


def _request_ip(r: dict[str, Any]) -> str | None:
    found = _split_endpoint(r.get("address"))
    return found[0] if found else None


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
                _location(response),
                _request_ip(hop),
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
    location = _location(response)
    if failure is None and status in _REDIRECTS and location:
        # the redirect was not followed to a request: what ended it is the test's HTTP failure
        # (the next host's DNS, connect or TLS); a hop of its own in lifeline's record
        failure = failure_of(tk.get("http_experiment_failure"))
        if failure is not None:
            target = urljoin(final_url, location)
            record.redirects.append(HTTPHop(final_url, status, location, _request_ip(last)))
            record.final_url = target
            status = None
            response = {}
    record.status = status
    body = _bytes_of(response.get("body")) if response else None
    if body is not None and (response.get("body") is not None):
        record.body_length = len(body)
        record.body_sha256 = hashlib.sha256(body).hexdigest()
        head = body[:BODY_HEAD_BYTES].decode("utf-8", errors="replace")
        record.body_head = head
        record.title = _title(head)
        record.body_truncated = bool(response.get("body_is_truncated"))
    record.headers = _headers(response.get("headers")) if response else {}
    record.duration_s = _duration(last)
    if failure is not None:
        record.ok, record.failure = False, failure
        # a failure of the last request itself came once it was sent (OONI records a
        # request only when its connection was made); one of the next hop's DNS,
        # connect or handshake came before any request to it
        record.request_sent = failure_of(last.get("failure")) is not None
    return record


def _host(url: str) -> str:
    """The URL's host as resolvers are asked for it: lower case, IDNA (punycode) labels."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _probe(m: dict[str, Any], tk: dict[str, Any], base: dict[str, Any]) -> Measurement:
    url = str(m["input"])
    parts = urlsplit(url)
    host = _host(url)
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
        if isinstance(c, dict) and c.get("port") == port and _depth(c) == 0
        and normalize_address(str(c.get("ip") or "")) in wanted
    ]  # fmt: skip
    if not connects:
        return obs  # nothing connected to the resolver's answers: OONI went no further here
    attempts = [
        TCPAttempt(
            normalize_address(str(c.get("ip"))), port, bool((c.get("status") or {}).get("success")),
            None if (c.get("status") or {}).get("success")
            else failure_of((c.get("status") or {}).get("failure")) or Failure.TIMEOUT,
            _duration(c),
        )
        for c in connects
    ]  # fmt: skip
    good = [a.address for a in attempts if a.ok]
    chain = _chain([r for r in tk.get("requests") or () if isinstance(r, dict)], url)
    via = _request_ip(chain[0]) if chain else None
    handshakes = [
        h for h in tk.get("tls_handshakes") or () if isinstance(h, dict) and _depth(h) == 0
    ]
    if via not in good:
        via = next(
            (e[0] for h in handshakes if (e := _split_endpoint(h.get("address"))) and e[0] in good),
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
        mine = [h for h in handshakes if _split_endpoint(h.get("address")) == (via, port)]
        if not mine:
            mine = [h for h in handshakes if not h.get("address")]
        if mine:
            tls = _tls_stage(mine[0], via)
            obs.stages["tls"] = tls
            if not tls.ok:
                return obs
    if chain and via is not None and any(_request_ip(r) for r in chain):
        first_ip = _request_ip(chain[0])
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
        der = _bytes_of(cert) if isinstance(cert, dict) else None
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
        failure is None, failure, _duration(h), address=via,
        server_name=h.get("server_name") or None, version=h.get("tls_version") or None,
        cipher=h.get("cipher_suite") or None, alpn=h.get("negotiated_protocol") or None,
        certificate=certificate, chain=chain, chain_truncated=truncated,
    )  # fmt: skip


def _control(m: dict[str, Any], tk: dict[str, Any], base: dict[str, Any]) -> Measurement | None:
    """The test helper's answer as the control's measurement; None when there is none."""
    ctl = tk.get("control")
    if not isinstance(ctl, dict) or not ctl or tk.get("control_failure"):
        return None
    url = str(m["input"])
    parts = urlsplit(url)
    host = _host(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    out = Measurement(**{**base, "vantage": CONTROL_VANTAGE})
    dns = ctl.get("dns")
    if _is_ip(host):
        out.stages["dns"] = DNSStage(
            True, None, 0.0, host, "", [normalize_address(host)], skipped=True
        )
    elif isinstance(dns, dict):
        listed = dns.get("addrs") or dns.get("ips") or ()  # "ips" in the 2016 test helper
        addrs = [normalize_address(a) for a in listed if _is_ip(str(a))]
        names = [str(a) for a in listed if not _is_ip(str(a))]
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
        where = _split_endpoint(key)
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
        pick = handshakes.get(_endpoint(via, port)) if via else None
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
            headers=_headers(http.get("headers")),
            body_length=length if isinstance(length, int) and length >= 0 else None,
            title=" ".join(str(http.get("title") or "").split()) or None,
        )  # fmt: skip
    return out


def _vantage(m: dict[str, Any]) -> str:
    cc = re.sub(r"[^a-z0-9]", "", str(m.get("probe_cc") or "zz").lower()) or "zz"
    asn = _asn(m.get("probe_asn"))
    return f"ooni-{cc}-{asn.lower()}"


def _asn(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"AS{value}"
    text = str(value or "AS0").strip().upper()
    if text.isdigit():
        return f"AS{text}"
    return text if re.fullmatch(r"AS\d+", text) else "AS0"


def _service(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return re.sub(r"[^a-z0-9._-]", "-", host) or "ooni"


def to_measurements(m: dict[str, Any]) -> tuple[Measurement, Measurement | None]:
    """The probe's measurement and the test helper's (None without a control) of one OONI one."""
    url = str(m["input"]).strip()
    runtime = m.get("test_runtime")
    base: dict[str, Any] = {
        "target": url,
        "vantage": _vantage(m),
        "time": _time(m.get("measurement_start_time")),
        "duration_s": float(runtime) if isinstance(runtime, (int, float)) and runtime >= 0 else 0.0,
        "service": _service(url),
    }
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        probe = Measurement(**base, error="the OONI measurement has no test_keys")
        control = None
    else:
        probe, control = _probe(m, tk, base), _control(m, tk, base)
    # the probe's network, as OONI says it (the test helper's is not in the record)
    cc = str(m.get("probe_cc") or "").upper()
    probe.country = cc if re.fullmatch(r"[A-Z]{2}", cc) and cc != "ZZ" else None
    number = int(_asn(m.get("probe_asn"))[2:])
    probe.asn = number if 0 < number < 2**32 else None
    name = m.get("probe_network_name")
    probe.network_name = name if isinstance(name, str) and name else None
    return probe, control


def ooni_block(m: dict[str, Any]) -> dict[str, Any]:
    """Who measured, where, and what OONI itself concluded."""
    keys = m.get("test_keys")
    tk: dict[str, Any] = keys if isinstance(keys, dict) else {}
    blocking = tk.get("blocking")
    accessible = tk.get("accessible")
    return {
        "report_id": m.get("report_id") or None,
        "measurement_uid": m.get("measurement_uid") or None,
        "input": m.get("input"),
        "probe_cc": m.get("probe_cc") or None,
        "probe_asn": _asn(m.get("probe_asn")) if m.get("probe_asn") is not None else None,
        "test_version": m.get("test_version") or None,
        "blocking": blocking if isinstance(blocking, (str, bool)) else None,
        "accessible": accessible if isinstance(accessible, bool) else None,
    }


def judge(m: dict[str, Any], judging: JudgingContext | None = None) -> dict[str, Any]:
    """One OONI measurement as a lifeline record (``Result.to_dict()`` plus its ``ooni`` block)."""
    judging = judging or JudgingContext(control=CONTROL_VANTAGE)
    obs, control = to_measurements(m)
    result: Result = judging.judge(obs, control=control, canaries={})
    result.ooni = ooni_block(m)
    return result.to_dict()


def import_files(paths: Sequence[str]) -> Iterator[Imported | Skipped]:
    """Every measurement of the files judged, in file order; a Skipped for what is not one."""
    judging = JudgingContext(control=CONTROL_VANTAGE)
    for path in paths:
        try:
            items = list(read_file(path))
        except OSError as exc:
            yield Skipped(path, f"cannot read: {exc.strerror or exc}")
            continue
        for source, item in items:
            if isinstance(item, Skipped):
                yield item
                continue
            try:
                record = judge(item, judging)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                # a field of an unexpected type: name it, never a traceback
                yield Skipped(source, f"malformed web_connectivity measurement: {exc!r}"[:300])
                continue
            yield Imported(source, record)


# --- the accuracy summary -------------------------------------------------------------

#: OONI's blocking values, as the confusion table's rows are named.
_ROWS = ("false", "dns", "tcp_ip", "http-failure", "http-diff", "null")


#: lifeline's verdicts that say what OONI's (blocking, accessible) says, for the agreement count.
_AGREES: dict[tuple[str, bool | None], frozenset[str]] = {
    ("false", True): frozenset({"ok", "throttled"}),
    ("false", False): frozenset({"service_down"}),  # not blocked and not accessible: down
    ("false", None): frozenset({"ok", "throttled", "service_down"}),
    ("dns", False): frozenset({"dns_blocked"}),
    ("tcp_ip", False): frozenset({"tcp_blocked"}),
    ("http-failure", False): frozenset({"http_blocked", "tls_blocked"}),
    ("http-diff", False): frozenset({"http_blocked", "anomaly"}),
    ("null", None): frozenset({"error", "unreachable", "service_down", "vantage_down"}),
}


def agrees(ooni: dict[str, Any], verdict: str) -> bool:
    """Whether lifeline's verdict says what OONI's blocking / accessible say (docs/accuracy.md)."""
    label = _ooni_label(ooni.get("blocking"))
    accessible = ooni.get("accessible")
    wanted = _AGREES.get((label, accessible if isinstance(accessible, bool) else None))
    if wanted is None:
        wanted = _AGREES.get((label, False), frozenset())
    return verdict in wanted


def _ooni_label(value: Any) -> str:
    if value is False:
        return "false"
    if value is True:
        return "true"
    if value is None:
        return "null"
    return str(value)


def summary_markdown(items: Sequence[Imported | Skipped], *, root: str | None = None) -> str:
    """The confusion table (OONI's blocking vs lifeline's verdict) and one row per measurement."""
    imported = [i for i in items if isinstance(i, Imported)]
    skipped = [i for i in items if isinstance(i, Skipped)]
    counts: Counter[tuple[str, str]] = Counter(
        (_ooni_label(i.record["ooni"]["blocking"]), i.verdict) for i in imported
    )
    verdicts = sorted({v for _, v in counts}, key=_verdict_order)
    rows = list(_ROWS) + sorted({r for r, _ in counts} - set(_ROWS))
    lines = [
        f"{len(imported)} measurements imported, {len(skipped)} files or lines skipped.",
        "",
        "| OONI blocking \\ lifeline | " + " | ".join(verdicts) + " | total |",
        "|---|" + "---:|" * (len(verdicts) + 1),
    ]
    for row in rows:
        cells = [counts.get((row, v), 0) for v in verdicts]
        lines.append(
            f"| {row} | " + " | ".join(str(c) if c else "·" for c in cells) + f" | {sum(cells)} |"
        )
    agreed = [i for i in imported if agrees(i.record["ooni"], i.verdict)]
    lines += [
        "",
        f"lifeline says what OONI says on {len(agreed)} of {len(imported)} measurements "
        "(docs/accuracy.md: which verdicts agree with which OONI values); "
        "the disagreements are marked **differs** below.",
        "",
        "| file | OONI blocking / accessible | lifeline | | reason |",
        "|---|---|---|---|---|",
    ]
    for i in imported:
        name = _short(i.source, root)
        reason = str(i.record["reason"]).replace("|", "\\|")
        ooni = i.record["ooni"]
        seen = f"{_ooni_label(ooni['blocking'])} / {_ooni_label(ooni['accessible']).lower()}"
        mark = "" if i in agreed else "**differs**"
        lines.append(f"| `{name}` | {seen} | {i.verdict} | {mark} | {reason} |")
    for s in skipped:
        why = s.why.replace("|", "\\|")
        lines.append(f"| `{_short(s.source, root)}` | | skipped | | {why} |")
    return "\n".join(lines) + "\n"


def _short(source: str, root: str | None) -> str:
    if root and source.startswith(root):
        return source[len(root) :].lstrip("/")
    return source


def _verdict_order(verdict: str) -> int:
    from probes.verdicts import Verdict

    names = [v.value for v in Verdict]
    return names.index(verdict) if verdict in names else len(names)


# --- the command ----------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    """`lifeline import ooni`: exit 0 all imported, 1 some skipped, 2 usage (nothing readable)."""
    items = list(import_files(args.files))
    skipped = [i for i in items if isinstance(i, Skipped)]
    imported = [i for i in items if isinstance(i, Imported)]
    for s in skipped:
        print(f"lifeline: {s.source}: skipped: {s.why}", file=sys.stderr)
    if args.summary:
        sys.stdout.write(summary_markdown(items, root=args.root))
    elif args.data_dir is None:
        out = sys.stdout
        for i in imported:
            out.write(json.dumps(i.record, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
    if args.data_dir is not None and imported:
        from exporter.store import Store, StoreError

        try:
            with Store(args.data_dir, retention_s=float("inf")) as store:
                store.add_records(sorted((i.record for i in imported), key=lambda r: r["time"]))
        except (StoreError, OSError) as exc:
            print(f"lifeline: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{len(imported)} measurements imported into {args.data_dir}", file=sys.stderr)
    if skipped and not imported:
        print("lifeline: nothing imported", file=sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_ALL

"""`export --format ooni` against OONI's specs: every key a web_connectivity 0.4 reader needs.

The table below is written from OONI's specifications (ooni/spec data-formats
df-000 base, df-001 httpt, df-002 dnst, df-005 tcpconnect, df-006 tlshandshake,
nettests ts-017 web_connectivity) and the types OONI Probe writes for them; every
exported line of a store of varied records is checked against it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from probes.failures import Failure
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
    Verdict,
)
from tests.test_store import T0, http_stage, iso, measurement, result, tls_stage

ROOT = Path(__file__).resolve().parent.parent

NULL = type(None)
STR, BOOL, DICT, LIST = (str,), (bool,), (dict,), (list,)
INT = (int,)  # never a bool (checked apart: bool is an int in Python)
NUMBER = (float, int)  # a JSON number (Go's float64 0 is written `0`)
STR_N, INT_N, BOOL_N, NUMBER_N = (str, NULL), (int, NULL), (bool, NULL), (float, int, NULL)
LIST_N, DICT_N, STR_DICT, STR_DICT_N = (list, NULL), (dict, NULL), (str, dict), (str, dict, NULL)
STR_BOOL_N = (str, bool, NULL)
REQUIRED, OPTIONAL = True, False
OONI_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

#: (path, allowed types, required, pattern or allowed values, where the row comes from).
#: A path's `[]` walks a list's items, `*` a map's values; a row under a parent that is
#: absent or null is not checked (its parent's row says whether that may be).
SPEC: list[tuple[str, tuple[type, ...], bool, Any, str]] = [
    # --- df-000 base data format (data format version 0.2.0) ---
    ("annotations", DICT, OPTIONAL, None, "df-000: map[string]string"),
    ("annotations.*", STR, REQUIRED, None, "df-000: map[string]string"),
    ("data_format_version", STR, REQUIRED, r"0\.2\.0", "df-000"),
    ("extensions", DICT, OPTIONAL, None, "df-000: map[string]int64"),
    ("extensions.*", INT, REQUIRED, None, "df-000: map[string]int64"),
    ("input", STR_N, REQUIRED, None, "df-000"),
    ("measurement_start_time", STR, REQUIRED, OONI_TIME, "df-000: UTC 'YYYY-MM-DD HH:MM:SS'"),
    ("probe_asn", STR, REQUIRED, r"AS\d+", "df-000: 'AS' and the number, AS0 unknown"),
    ("probe_cc", STR, REQUIRED, r"[A-Z]{2}", "df-000: two letters, ZZ unknown"),
    ("probe_ip", STR, REQUIRED, None, "df-000: 127.0.0.1 when not disclosed"),
    ("probe_network_name", STR, REQUIRED, None, "df-000"),
    ("report_id", STR, REQUIRED,
     r"\d{8}T\d{6}Z_webconnectivity_[A-Z]{2}_\d+_n1_[A-Za-z0-9]{16}",
     "df-000 / OONI collector: YYYYMMDDTHHMMSSZ_<test>_<cc>_<asn>_n1_<16 letters>"),
    ("resolver_asn", STR, REQUIRED, r"AS\d+", "df-000 (since data format 0.3.1)"),
    ("resolver_ip", STR, REQUIRED, None, "df-000 (since data format 0.2.1)"),
    ("resolver_network_name", STR, REQUIRED, None, "df-000 (since data format 0.3.1)"),
    ("software_name", STR, REQUIRED, None, "df-000"),
    ("software_version", STR, REQUIRED, None, "df-000"),
    ("test_helpers", DICT, OPTIONAL, None, "df-000 (OONI Probe omits it when no helper answered)"),
    ("test_keys", DICT, REQUIRED, None, "df-000"),
    ("test_name", STR, REQUIRED, r"web_connectivity", "df-000 / ts-017"),
    ("test_runtime", NUMBER, REQUIRED, None, "df-000: float seconds"),
    ("test_start_time", STR, REQUIRED, OONI_TIME, "df-000"),
    ("test_version", STR, REQUIRED, r"0\.4\.\d+", "ts-017: the version declared"),
    # --- ts-017 web_connectivity test keys (0.4.x) ---
    ("test_keys.agent", STR, REQUIRED, {"redirect", "agent"}, "df-001 / ts-017"),
    ("test_keys.client_resolver", STR, REQUIRED, None, "ts-017"),
    ("test_keys.retries", INT_N, REQUIRED, None, "ts-017 0.4 (unused: null)"),
    ("test_keys.socksproxy", STR_N, REQUIRED, None, "ts-017 0.4 (unused: null)"),
    ("test_keys.network_events", LIST_N, REQUIRED, None, "ts-017 / df-008"),
    ("test_keys.queries", LIST_N, REQUIRED, None, "ts-017 / df-002"),
    ("test_keys.tcp_connect", LIST_N, REQUIRED, None, "ts-017 / df-005"),
    ("test_keys.tls_handshakes", LIST_N, REQUIRED, None, "ts-017 / df-006"),
    ("test_keys.requests", LIST_N, REQUIRED, None, "ts-017 / df-001"),
    ("test_keys.dns_experiment_failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.http_experiment_failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.control_failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.control", DICT, REQUIRED, None, "ts-017: the test helper's answer"),
    ("test_keys.dns_consistency", STR_N, REQUIRED,
     {"consistent", "inconsistent", "reverse_match", None}, "ts-017: optional<string>"),
    ("test_keys.body_proportion", NUMBER_N, REQUIRED, None, "ts-017: optional<float64>"),
    ("test_keys.body_length_match", BOOL_N, REQUIRED, None, "ts-017: optional<bool>"),
    ("test_keys.headers_match", BOOL_N, REQUIRED, None, "ts-017: optional<bool>"),
    ("test_keys.status_code_match", BOOL_N, REQUIRED, None, "ts-017: optional<bool>"),
    ("test_keys.title_match", BOOL_N, REQUIRED, None, "ts-017: optional<bool>"),
    ("test_keys.accessible", BOOL_N, REQUIRED, None, "ts-017: optional<bool>"),
    ("test_keys.blocking", STR_BOOL_N, REQUIRED,
     {"tcp_ip", "dns", "http-diff", "http-failure", False, None},
     "ts-017: optional<string|bool>"),
    # --- ts-017: the control (the test helper's response) ---
    ("test_keys.control.tcp_connect", DICT_N, OPTIONAL, None, "ts-017 control"),
    ("test_keys.control.tcp_connect.*.status", BOOL, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.tcp_connect.*.failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.control.tls_handshake", DICT_N, OPTIONAL, None, "ts-017 control"),
    ("test_keys.control.tls_handshake.*.server_name", STR, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.tls_handshake.*.status", BOOL, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.tls_handshake.*.failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.control.http_request", DICT, OPTIONAL, None, "ts-017 control"),
    ("test_keys.control.http_request.body_length", INT, REQUIRED, None, "ts-017: -1 failed"),
    ("test_keys.control.http_request.failure", STR_N, REQUIRED, None, "ts-017"),
    ("test_keys.control.http_request.title", STR, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.http_request.headers", DICT_N, REQUIRED, None, "ts-017"),
    ("test_keys.control.http_request.headers.*", STR, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.http_request.status_code", INT, REQUIRED, None, "ts-017: -1 failed"),
    ("test_keys.control.dns", DICT, OPTIONAL, None, "ts-017 control"),
    ("test_keys.control.dns.failure", STR_N, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.dns.addrs", LIST_N, REQUIRED, None, "ts-017 control"),
    ("test_keys.control.dns.addrs[]", STR, REQUIRED, None, "ts-017 control"),
    # --- df-002 DNS ---
    ("test_keys.queries[].answers", LIST_N, REQUIRED, None, "df-002"),
    ("test_keys.queries[].engine", STR, REQUIRED, None, "df-002"),
    ("test_keys.queries[].failure", STR_N, REQUIRED, None, "df-002"),
    ("test_keys.queries[].hostname", STR, REQUIRED, None, "df-002"),
    ("test_keys.queries[].query_type", STR, REQUIRED, None, "df-002"),
    ("test_keys.queries[].rcode", INT, OPTIONAL, None, "df-002 (OONI Probe: int64)"),
    ("test_keys.queries[].resolver_address", STR, REQUIRED, None, "df-002 (since 0.3.1)"),
    ("test_keys.queries[].resolver_hostname", STR_N, REQUIRED, None, "df-002"),
    ("test_keys.queries[].resolver_port", STR_N, REQUIRED, None, "df-002"),
    ("test_keys.queries[].t", NUMBER, REQUIRED, None, "df-002"),
    ("test_keys.queries[].t0", NUMBER, OPTIONAL, None, "df-002"),
    ("test_keys.queries[].tags", LIST_N, OPTIONAL, None, "df-002"),
    ("test_keys.queries[].answers[].answer_type", STR, REQUIRED, None, "df-002"),
    ("test_keys.queries[].answers[].ipv4", STR, OPTIONAL, None, "df-002: A answers"),
    ("test_keys.queries[].answers[].ipv6", STR, OPTIONAL, None, "df-002: AAAA answers"),
    ("test_keys.queries[].answers[].hostname", STR, OPTIONAL, None, "df-002: CNAME answers"),
    ("test_keys.queries[].answers[].ttl", INT_N, REQUIRED, None, "df-002"),
    # --- df-005 TCP connect (and ts-017's `blocked`) ---
    ("test_keys.tcp_connect[].ip", STR, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].port", INT, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].status", DICT, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].status.success", BOOL, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].status.failure", STR_N, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].status.blocked", BOOL, OPTIONAL, None, "ts-017"),
    ("test_keys.tcp_connect[].t", NUMBER, REQUIRED, None, "df-005"),
    ("test_keys.tcp_connect[].t0", NUMBER, OPTIONAL, None, "df-005"),
    ("test_keys.tcp_connect[].tags", LIST_N, OPTIONAL, None, "df-005"),
    # --- df-006 TLS handshake ---
    ("test_keys.tls_handshakes[].network", STR, OPTIONAL, None, "df-006"),
    ("test_keys.tls_handshakes[].address", STR, OPTIONAL, None, "df-006"),
    ("test_keys.tls_handshakes[].cipher_suite", STR, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].failure", STR_N, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].negotiated_protocol", STR, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].no_tls_verify", BOOL, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].peer_certificates", LIST_N, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].peer_certificates[].data", STR, REQUIRED, None, "df-001"),
    ("test_keys.tls_handshakes[].peer_certificates[].format", STR, REQUIRED, {"base64"},
     "df-001 MaybeBinaryData"),
    ("test_keys.tls_handshakes[].server_name", STR, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].t", NUMBER, REQUIRED, None, "df-006"),
    ("test_keys.tls_handshakes[].t0", NUMBER, OPTIONAL, None, "df-006"),
    ("test_keys.tls_handshakes[].tags", LIST_N, OPTIONAL, None, "df-006"),
    ("test_keys.tls_handshakes[].tls_version", STR, REQUIRED, None, "df-006"),
    # --- df-001 HTTP ---
    ("test_keys.requests[].failure", STR_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request", DICT, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response", DICT, REQUIRED, None, "df-001"),
    ("test_keys.requests[].t", NUMBER, REQUIRED, None, "df-001"),
    ("test_keys.requests[].t0", NUMBER, OPTIONAL, None, "df-001"),
    ("test_keys.requests[].tags", LIST_N, OPTIONAL, None, "df-001"),
    ("test_keys.requests[].address", STR, OPTIONAL, None, "df-001"),
    ("test_keys.requests[].network", STR, OPTIONAL, None, "df-001"),
    ("test_keys.requests[].request.body", STR_DICT, REQUIRED, None, "df-001 MaybeBinaryData"),
    ("test_keys.requests[].request.body_is_truncated", BOOL, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.headers_list", LIST, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.headers_list[][]", STR, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.headers", DICT, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.headers.*", STR, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.method", STR, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.tor", DICT, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.tor.exit_ip", STR_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.tor.exit_name", STR_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.tor.is_tor", BOOL, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.url", STR, REQUIRED, None, "df-001"),
    ("test_keys.requests[].request.x_transport", STR, OPTIONAL, None, "df-001"),
    ("test_keys.requests[].response.body", STR_DICT_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response.body_is_truncated", BOOL, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response.code", INT, REQUIRED, None, "df-001: 0 without response"),
    ("test_keys.requests[].response.headers_list", LIST_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response.headers_list[][]", STR, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response.headers", DICT_N, REQUIRED, None, "df-001"),
    ("test_keys.requests[].response.headers.*", STR, REQUIRED, None, "df-001"),
]  # fmt: skip

_MISSING = object()


def _at(node: Any, segments: list[str]) -> Iterator[Any]:
    """Every value at ``segments`` under ``node`` (``_MISSING`` where the last key is absent)."""
    if not segments:
        yield node
        return
    head, rest = segments[0], segments[1:]
    if head == "*":
        for value in node.values() if isinstance(node, dict) else ():
            yield from _at(value, rest)
        return
    name, walk = (head[:-2], True) if head.endswith("[]") else (head, False)
    value = node.get(name, _MISSING) if name and isinstance(node, dict) else node
    if value is _MISSING:
        if not rest and not walk:
            yield _MISSING
        return
    if walk:
        for item in value if isinstance(value, list) else ():
            yield from _at(item, rest) if rest else iter([item])
        return
    if value is None and rest:
        return  # a null parent: its own row says whether it may be
    yield from _at(value, rest)


def _segments(path: str) -> list[str]:
    out = []
    for part in path.split("."):
        while part.endswith("[][]"):  # a list of lists: walk both
            out.append(part[:-2])
            part = "[]"
        out.append(part)
    return out


def problems(doc: dict[str, Any]) -> list[str]:
    """What in one exported line breaks the table: key, value and the spec it comes from."""
    out = []
    for path, types, required, allowed, source in SPEC:
        for value in _at(doc, _segments(path)):
            if value is _MISSING:
                if required:
                    out.append(f"{path}: missing ({source})")
                continue
            if type(value) not in types or (isinstance(value, bool) and bool not in types):
                out.append(f"{path}: {value!r} is not {'|'.join(t.__name__ for t in types)}"
                           f" ({source})")  # fmt: skip
            elif isinstance(allowed, str) and not re.fullmatch(allowed, str(value)):
                out.append(f"{path}: {value!r} does not match {allowed} ({source})")
            elif isinstance(allowed, set) and value not in allowed:
                out.append(f"{path}: {value!r} not one of {sorted(map(str, allowed))} ({source})")
    for tk in [doc.get("test_keys") or {}]:
        for request in tk.get("requests") or ():
            for part in ("request", "response"):
                for pair in (request.get(part) or {}).get("headers_list") or ():
                    if len(pair) != 2:
                        out.append(f"requests[].{part}.headers_list: {pair!r} is not a pair")
    return out


# --- the store --------------------------------------------------------------------------------


def _v6_dns(name: str, address: str) -> DNSStage:
    return DNSStage(
        True, None, 0.02, name, "udp://[::1]:5353", addresses=[address],
        queries=[
            DNSQuery("A", False, Failure.DNS_NO_ANSWER, "NOERROR", [], 0.01, rcode_number=0),
            DNSQuery("AAAA", True, None, "NOERROR", [DNSAnswer("AAAA", address, 60)], 0.02,
                     rcode_number=0),
        ],
    )  # fmt: skip


def _v6(vantage: str, ts: float, address: str, *, tcp_failure: str | None = None) -> Measurement:
    m = Measurement("https://six.example/", vantage, iso(ts), 0.2, "six")
    m.dns = _v6_dns("six.example", address)
    ok = tcp_failure is None
    m.tcp = TCPStage(ok, tcp_failure, 0.01, [TCPAttempt(address, 443, ok, tcp_failure, 0.01)],
                     address if ok else None, 443)  # fmt: skip
    if not ok:
        return m
    m.tls = tls_stage(address, "six.example")
    m.http = http_stage("https://six.example/")
    m.http.redirects[0].address = address  # the first request went on this connection
    return m


def _down(vantage: str, ts: float) -> Measurement:
    return measurement(vantage, ts, tcp_failure=Failure.CONNECTION_REFUSED)


def _http_reset(ts: float) -> Measurement:
    m = measurement("ir", ts, http=HTTPStage(
        ok=False, failure=Failure.CONNECTION_RESET, duration_s=0.03, url="https://news.example/",
        final_url="https://news.example/", request_sent=True,
    ))  # fmt: skip
    return m


def _cdn(ts: float, *, tls_failure: str | None = None) -> Measurement:
    """Other addresses than the control's: a CDN's (the TLS handshake for the host succeeds)."""
    m = measurement("kz", ts, addresses=("151.101.1.9",), tls_failure=tls_failure)
    if m.http is not None:
        m.http.redirects[0].address = "151.101.1.9"  # the first request went on this connection
    return m


def _ip_literal(ts: float) -> Result:
    m = Measurement("http://127.0.0.7/", "ir", iso(ts), 0.05, "literal")
    m.dns = DNSStage(True, None, 0.0, "127.0.0.7", "udp://127.0.0.1:5353",
                     addresses=["127.0.0.7"], skipped=True)  # fmt: skip
    m.tcp = TCPStage(True, None, 0.01, [TCPAttempt("127.0.0.7", 80, True, None, 0.01)],
                     "127.0.0.7", 80)  # fmt: skip
    m.http = HTTPStage(True, None, 0.02, url="http://127.0.0.7/", final_url="http://127.0.0.7/",
                       status=200, headers={"server": "nginx", "set-cookie": "a=1"},
                       body_length=12, body_head="<html></html>", request_sent=True)  # fmt: skip
    ctl = Measurement("http://127.0.0.7/", "control", iso(ts), 0.05, "literal")
    ctl.dns, ctl.tcp = m.dns, m.tcp
    ctl.http = m.http
    return Result(m, Verdict.OK, "fine, by address", control=ctl, version="0.1.0")


def _redirect_elsewhere(ts: float) -> Result:
    """A redirect to another host whose connection was reset: the chain ends in a failure."""
    http = HTTPStage(
        ok=False, failure=Failure.CONNECTION_RESET, duration_s=0.04, url="http://news.example/",
        final_url="https://other.example/", status=None,
        redirects=[HTTPHop("http://news.example/", 302, "https://other.example/", "127.0.0.2")],
    )  # fmt: skip
    m = Measurement("http://news.example/", "ir", iso(ts), 0.1, "news")
    ref = measurement("ir", ts)
    m.dns, m.tcp, m.http = ref.dns, ref.tcp, http
    m.tcp.port = 80
    m.tcp.attempts[0].port = 80
    ctl = Measurement("http://news.example/", "control", iso(ts), 0.1, "news")
    ctl.dns, ctl.tcp = ref.dns, ref.tcp
    ctl.http = http_stage("http://news.example/")
    return Result(m, Verdict.HTTP_BLOCKED, "reset after the redirect", control=ctl)


def varied(ts: float) -> list[Result]:
    """Results of every shape the export must render."""
    ctl = measurement("control", ts)
    block = http_stage("https://news.example/", status=200, title="Access denied", body=800)
    r_error = Result(
        Measurement("https://news.example/", "ir", iso(ts + 9), service="news", error="bad target"),
        Verdict.ERROR, "the measurement could not be made: bad target",
    )  # fmt: skip
    v6_ok = _v6("ir", ts + 10, "2001:db8::5")
    v6_control = _v6("control", ts + 10, "2001:db8::5")
    no_control = Result(_down("kz", ts + 12), Verdict.UNREACHABLE, "nothing to compare")
    return [
        result(Verdict.OK, ts, reason="fine"),  # with a redirect (http_stage has one hop)
        result(Verdict.DNS_BLOCKED, ts + 1, addresses=("10.10.34.34",), reason="injected"),
        result(Verdict.DNS_BLOCKED, ts + 2, dns_failure=Failure.DNS_NXDOMAIN, reason="nxdomain"),
        result(Verdict.TCP_BLOCKED, ts + 3, tcp_failure=Failure.CONNECTION_RESET),
        result(Verdict.TLS_BLOCKED, ts + 4, tls_failure=Failure.EOF),
        result(Verdict.HTTP_BLOCKED, ts + 5, http=block),
        Result(_down("ir", ts + 6), Verdict.SERVICE_DOWN, "down for the control too",
               control=_down("control", ts + 6)),
        Result(_down("ir", ts + 7), Verdict.VANTAGE_DOWN, "every canary failed", control=ctl),
        Result(_http_reset(ts + 8), Verdict.HTTP_BLOCKED, "reset after the request", control=ctl),
        r_error,
        Result(v6_ok, Verdict.OK, "fine over IPv6", control=v6_control),
        Result(_v6("kz", ts + 11, "2001:db8::6", tcp_failure=Failure.TIMEOUT),
               Verdict.TCP_BLOCKED, "v6 timeout", control=_v6("control", ts + 11, "2001:db8::6")),
        no_control,
        Result(measurement("kz", ts + 13), Verdict.OK, "fine, no control"),
        Result(_cdn(ts + 14), Verdict.OK, "a CDN's addresses", control=ctl),
        Result(_cdn(ts + 15, tls_failure=Failure.SSL_INVALID_HOSTNAME), Verdict.DNS_BLOCKED,
               "another server", control=ctl),
        _ip_literal(ts + 16),
        _redirect_elsewhere(ts + 17),
        result(Verdict.THROTTLED, ts + 18),
        result(Verdict.ANOMALY, ts + 19, http=http_stage("https://news.example/", body=100)),
        Result(measurement("ir", ts + 20, dns_failure=Failure.DNS_NXDOMAIN), Verdict.SERVICE_DOWN,
               "gone for the control too",
               control=measurement("control", ts + 20, dns_failure=Failure.DNS_NXDOMAIN)),
    ]  # fmt: skip


PER_DAY = len(varied(T0))


@pytest.fixture()
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    from exporter.store import Store

    with Store(tmp_path / "data") as store:
        store.add(varied(T0))
        store.add(varied(T0 + 86_400))  # the next UTC day
    code = main(["export", "--data-dir", str(tmp_path / "data"), "--format", "ooni"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _by(docs: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    (found,) = [d for d in docs[:PER_DAY] if d["test_keys"]["lifeline_reason"] == reason]
    return found


# --- the tests --------------------------------------------------------------------------------


def test_every_exported_line_passes_the_spec_table(exported: list[dict[str, Any]]) -> None:
    assert len(exported) == 2 * PER_DAY
    found = {i: problems(doc) for i, doc in enumerate(exported)}
    assert {i: p for i, p in found.items() if p} == {}


def test_report_id_is_per_vantage_and_day_and_the_same_on_every_export(
    exported: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day1, day2 = exported[:PER_DAY], exported[PER_DAY:]
    ids = {(d["annotations"]["lifeline_vantage"], d["report_id"]) for d in day1}
    assert len({v for v, _ in ids}) == len(ids) == 2  # one report per vantage (ir, kz)
    ir = next(d for d in day1 if d["annotations"]["lifeline_vantage"] == "ir")
    assert ir["report_id"].startswith("20260101T000000Z_webconnectivity_ZZ_0_n1_")
    assert {d["report_id"] for d in day1}.isdisjoint(d["report_id"] for d in day2)
    assert main(["export", "--data-dir", str(tmp_path / "data"), "--format", "ooni"]) == 0
    again = [json.loads(line)["report_id"] for line in capsys.readouterr().out.splitlines()]
    assert again == [d["report_id"] for d in exported]  # the same store, the same lines


def test_a_vantages_network_is_in_its_report_id(tmp_path: Path) -> None:
    from exporter.export.ooni import ooni_record

    r = result(Verdict.OK, T0)
    r.measurement.country, r.measurement.asn = "IR", 12880
    doc = ooni_record(r)
    assert re.fullmatch(r"20260101T000000Z_webconnectivity_IR_12880_n1_[A-Za-z0-9]{16}",
                        doc["report_id"])  # fmt: skip
    assert doc["probe_asn"] == "AS12880" and doc["resolver_asn"] == "AS0"


def test_blocking_and_accessible_follow_ooni_s_table(exported: list[dict[str, Any]]) -> None:
    def pair(reason: str) -> tuple[Any, Any]:
        keys = _by(exported, reason)["test_keys"]
        return keys["blocking"], keys["accessible"]

    assert pair("down for the control too") == (False, False)  # OONI's "website down"
    assert pair("every canary failed") == (None, None)  # the measurement failed
    assert pair("nothing to compare") == (None, None)
    assert pair("the measurement could not be made: bad target") == (None, None)
    assert pair("fine") == (False, True)
    assert pair("judged throttled") == (False, True)
    assert pair("injected") == ("dns", False)


def test_dns_consistency_compares_the_answers_with_the_control(
    exported: list[dict[str, Any]],
) -> None:
    def consistency(reason: str) -> Any:
        return _by(exported, reason)["test_keys"]["dns_consistency"]

    assert consistency("fine") == "consistent"  # the control's own addresses
    assert consistency("judged tcp_blocked") == "consistent"  # not a DNS verdict, same answers
    assert consistency("injected") == "inconsistent"
    assert consistency("nxdomain") == "inconsistent"  # the control found the name
    assert consistency("gone for the control too") == "consistent"  # both NXDOMAIN
    # other addresses, but a TLS handshake for the host on them succeeded (ts-017's rule 4)
    assert consistency("a CDN's addresses") == "consistent"
    assert consistency("another server") == "inconsistent"  # other addresses, bad certificate
    assert consistency("fine over IPv6") == "consistent"
    assert consistency("fine, no control") is None  # nothing to compare with
    ip_literal = next(d for d in exported if d["input"] == "http://127.0.0.7/")
    assert ip_literal["test_keys"]["dns_consistency"] == "consistent"


def test_the_control_says_its_tls_and_ipv6_endpoints_in_brackets(
    exported: list[dict[str, Any]],
) -> None:
    ok = _by(exported, "fine")["test_keys"]["control"]
    assert ok["tls_handshake"] == {
        "127.0.0.2:443": {"server_name": "news.example", "status": True, "failure": None}
    }
    assert ok["tcp_connect"] == {"127.0.0.2:443": {"status": True, "failure": None}}
    six = _by(exported, "fine over IPv6")["test_keys"]
    assert set(six["control"]["tcp_connect"]) == {"[2001:db8::5]:443"}
    assert set(six["control"]["tls_handshake"]) == {"[2001:db8::5]:443"}
    assert six["tls_handshakes"][0]["address"] == "[2001:db8::5]:443"
    assert six["tcp_connect"][0]["ip"] == "2001:db8::5"
    assert six["queries"][1]["answers"] == [{"answer_type": "AAAA", "ipv6": "2001:db8::5",
                                             "ttl": 60}]  # fmt: skip
    nx = _by(exported, "nxdomain")
    assert nx["test_helpers"] == {"backend": {"address": "lifeline:control", "type": "lifeline"}}
    assert _by(exported, "nothing to compare")["test_helpers"] == {}


def test_rcode_is_the_reply_code_number(exported: list[dict[str, Any]]) -> None:
    ok = _by(exported, "fine")["test_keys"]["queries"]
    assert [q["rcode"] for q in ok] == [0, 0]  # NOERROR (the AAAA had no answer)
    nx = _by(exported, "nxdomain")
    assert nx["test_keys"]["queries"][0]["rcode"] == 3  # NXDOMAIN
    assert nx["test_keys"]["control"]["dns"]["failure"] is None


def test_requests_have_the_http_template_s_shape(exported: list[dict[str, Any]]) -> None:
    final, first = _by(exported, "fine")["test_keys"]["requests"]
    assert first["request"]["headers_list"] == [["Host", "news.example"]]
    assert first["response"]["headers"] == {"Location": "https://news.example/home"}
    assert final["response"]["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert ["X-News-Edition", "intl"] in final["response"]["headers_list"]
    assert final["response"]["x_body_length"] == 5120
    assert 0 <= final["t0"] <= final["t"] and final["address"] == "127.0.0.2:443"
    assert first["address"] == "127.0.0.2:443" and first["request"]["tor"]["is_tor"] is False
    reset = _by(exported, "reset after the request")["test_keys"]
    (only,) = reset["requests"]
    assert only["failure"] == "connection_reset" and only["response"]["code"] == 0
    assert reset["http_experiment_failure"] == "connection_reset"
    tls = _by(exported, "judged tls_blocked")["test_keys"]
    assert tls["requests"] == [] and tls["http_experiment_failure"] == "eof_error"
    (handshake,) = tls["tls_handshakes"]
    assert (handshake["tls_version"], handshake["cipher_suite"]) == ("", "")
    assert handshake["no_tls_verify"] is False
    away = _by(exported, "reset after the redirect")["test_keys"]["requests"]
    assert [r["request"]["url"] for r in away] == ["https://other.example/",
                                                   "http://news.example/"]  # fmt: skip
    assert away[1]["address"] == "127.0.0.2:80" and "address" not in away[0]


def _real_folder() -> Path | None:
    """../shared/ooni-real beside the checkout (or its worktree's), or $LIFELINE_OONI_REAL."""
    named = os.environ.get("LIFELINE_OONI_REAL")
    candidates = [Path(named)] if named else [p / "shared" / "ooni-real" for p in ROOT.parents]
    return next((p for p in candidates if (p / "manifest.json").is_file()), None)


def test_the_table_accepts_ooni_probes_own_web_connectivity_0_4_measurements() -> None:
    """The table is OONI's, not ours: real 0.4.x measurements of OONI Probe pass it whole."""
    folder = _real_folder()
    if folder is None:
        pytest.skip("the real OONI measurements (../shared/ooni-real/) are not here; "
                    "set LIFELINE_OONI_REAL to the folder to run this test")  # fmt: skip
    found = {}
    for entry in json.loads((folder / "manifest.json").read_text()):
        if entry.get("kind") != "raw":  # as a probe submitted it (not a spec's example)
            continue
        text = (folder / entry["file"]).read_text()
        doc = json.loads("\n".join(x for x in text.splitlines() if not x.lstrip().startswith("//")))
        raw = doc.get("raw_measurement", doc) if isinstance(doc, dict) else None
        doc = json.loads(raw) if isinstance(raw, str) else raw
        if (
            isinstance(doc, dict)
            and doc.get("test_name") == "web_connectivity"
            and str(doc.get("test_version")).startswith("0.4.")
        ):
            found[entry["file"]] = problems(doc)
    assert len(found) >= 3  # OONI Probe 3.x's 0.4.1 and 0.4.3 measurements, ID and IR
    assert {f: p for f, p in found.items() if p} == {}

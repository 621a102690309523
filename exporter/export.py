"""`lifeline export`, `lifeline classify` and `lifeline incidents`: history for researchers.

- export: measurements from the store, streamed (a cursor, written as read,
  so memory stays flat for millions of rows) as JSONL (the records as
  stored), CSV (one flat row each) or OONI web_connectivity-style JSON lines.
- classify: replays a JSONL log through today's classifier and fingerprints
  and says which verdicts would change: rules can be checked against history.
- incidents: the verdict timeline of the store, non-ok periods, newest first.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from exporter.logs import BadLine, read_lines
from exporter.store import DB_NAME, Store, StoreError, VerdictChange, parse_time
from probes import __version__
from probes.defaults import BODY_PROPORTION, DEFAULT_THROTTLE_RATIO, TITLE_WORD_MIN
from probes.model import CANARY_SERVICE, Config, Storage
from probes.records import Measurement, Result, Verdict

if TYPE_CHECKING:
    from probes.fingerprints import FingerprintSet

__all__ = [
    "CSV_COLUMNS",
    "INCIDENTS_SCHEMA",
    "Reclassified",
    "csv_row",
    "export",
    "format_duration",
    "incidents",
    "ooni_record",
    "reclassify",
    "resolve_time",
    "run_classify",
    "run_export",
    "run_incidents",
]

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2
INCIDENTS_SCHEMA = "lifeline.incidents/1"

# --- shared: where the data is, what time is meant ------------------------------------------


def _load_config(path: str) -> Config | None:
    """The config at ``path``; prints every problem and returns None when it is invalid."""
    from probes.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"lifeline: {path}: invalid config:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def _resolve_data(args: argparse.Namespace) -> tuple[Path, Config | None] | None:
    """The data directory (--data-dir, else the config's storage.dir, else the default).

    The config is read only when its file exists; None when it is invalid.
    """
    config: Config | None = None
    config_path = getattr(args, "config", None)
    if config_path and Path(config_path).is_file():
        config = _load_config(config_path)
        if config is None:
            return None
    if args.data_dir:
        return Path(args.data_dir), config
    return Path((config.storage if config else Storage()).dir), config


def _open_existing(directory: Path) -> Store | None:
    """Open the store for reading; None (with a message) when there is none or it is unusable."""
    if not (directory / DB_NAME).is_file():
        print(f"lifeline: no store at {directory / DB_NAME} (use --data-dir)", file=sys.stderr)
        return None
    try:
        return Store(directory)
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return None


def resolve_time(text: str, *, now: float | None = None) -> str:
    """An RFC 3339 UTC time from RFC 3339 text or a duration before now ("24h", "7d", "90m").

    Raises ValueError with a sentence when it is neither.
    """
    from probes.config import parse_duration

    text = text.strip()
    if text == "now":
        return _rfc3339(time.time() if now is None else now)
    try:
        return _rfc3339(parse_time(text))
    except ValueError:
        pass
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (2024-05-01T12:00:00Z) "
            "nor a duration before now (24h, 7d, 90m)"
        ) from None
    return _rfc3339((time.time() if now is None else now) - seconds)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- export ---------------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "time", "service", "target", "vantage", "verdict", "reason", "duration_s", "error",
    "dns_ok", "dns_failure", "dns_resolver", "dns_addresses", "dns_duration_s",
    "tcp_ok", "tcp_failure", "tcp_address", "tcp_duration_s",
    "tls_ok", "tls_failure", "tls_version", "tls_duration_s",
    "http_ok", "http_failure", "http_status", "http_title", "http_body_length",
    "http_final_url", "http_throughput_bps", "http_duration_s",
    "control_first_failure", "control_dns_addresses", "control_http_status",
    "control_http_body_length", "lifeline_version",
)  # fmt: skip


def export(
    store: Store,
    out: IO[str],
    *,
    fmt: str = "jsonl",
    since: str | None = None,
    until: str | None = None,
    services: Sequence[str] = (),
    vantages: Sequence[str] = (),
    countries: dict[str, str] | None = None,
) -> int:
    """Write the selected measurements to ``out`` as they are read; returns the row count."""
    filters: dict[str, Any] = {
        "since": since,
        "until": until,
        "services": services,
        "vantages": vantages,
    }
    count = 0
    if fmt == "jsonl":
        for line in store.measurement_lines(**filters):
            out.write(line)
            out.write("\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in store.measurements(**filters):
            writer.writerow(csv_row(record))
            count += 1
    elif fmt == "ooni":
        for record in store.measurements(**filters):
            rendered = ooni_record(record, country=(countries or {}).get(record.get("vantage", "")))
            out.write(json.dumps(rendered, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return count


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_row(record: dict[str, Any]) -> list[str]:
    """One flat CSV row (in :data:`CSV_COLUMNS` order) of a measurement record.

    Empty cells mean "not measured"; ``<stage>_ok`` is empty when the stage did not run.
    """
    stages = record.get("stages") or {}
    dns, tcp, tls, http = (stages.get(k) or {} for k in ("dns", "tcp", "tls", "http"))
    control = _flat(record.get("control")) or {}
    c_dns, c_http = control.get("dns") or {}, control.get("http") or {}
    values: list[Any] = [
        record.get("time"), record.get("service"), record.get("target"), record.get("vantage"),
        record.get("verdict"), record.get("reason"), record.get("duration_s"), record.get("error"),
        dns.get("ok"), dns.get("failure"), dns.get("resolver"),
        " ".join(dns.get("addresses") or []), dns.get("duration_s"),
        tcp.get("ok"), tcp.get("failure"), tcp.get("address"), tcp.get("duration_s"),
        tls.get("ok"), tls.get("failure"), tls.get("version"), tls.get("duration_s"),
        http.get("ok"), http.get("failure"), http.get("status"), http.get("title"),
        http.get("body_length"), http.get("final_url"), http.get("throughput_bps"),
        http.get("duration_s"),
        _first_failure(control) if control else None,
        " ".join(c_dns.get("addresses") or []) if control else None,
        c_http.get("status"), c_http.get("body_length"), record.get("lifeline_version"),
    ]  # fmt: skip
    return [_cell(v) for v in values]


def _flat(control: dict[str, Any] | None) -> dict[str, Any] | None:
    """A control measurement with its stage records beside its other keys (as under /1)."""
    if not control:
        return control
    return {**control, **(control.get("stages") or {})}


def _first_failure(measurement: dict[str, Any]) -> str:
    """'stage: failure' of the first failed stage of a flat measurement dict, or 'none'."""
    if measurement.get("error"):
        return f"error: {measurement['error']}"
    for name in ("dns", "tcp", "tls", "http"):
        stage = measurement.get(name)
        if stage and not stage.get("ok"):
            return f"{name}: {stage.get('failure')}"
    return "none"


def run_export(args: argparse.Namespace) -> int:
    """`lifeline export`: measurements from the store to stdout, streamed."""
    resolved = _resolve_data(args)
    if resolved is None:
        return EXIT_USAGE
    directory, config = resolved
    try:
        since = resolve_time(args.since) if args.since else None
        until = resolve_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = _open_existing(directory)
    if store is None:
        return EXIT_FOUND
    countries = {v.name: v.country for v in config.vantages if v.country} if config else {}
    try:
        export(
            store,
            sys.stdout,
            fmt=args.format,
            since=since,
            until=until,
            services=args.service,
            vantages=args.vantage,
            countries=countries,
        )
        sys.stdout.flush()
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_FOUND
    finally:
        store.close()
    return EXIT_OK


# --- OONI rendering -------------------------------------------------------------------------

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
# Headers every server sends: sharing them says nothing about the page.
_COMMON_HEADERS = frozenset(
    {"date", "content-type", "content-length", "server", "connection", "cache-control",
     "expires", "vary", "set-cookie", "transfer-encoding", "content-encoding", "etag",
     "last-modified", "accept-ranges", "age", "via"}
)  # fmt: skip


def _ooni_time(rfc3339: str) -> str:
    """OONI's measurement time format: UTC 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.fromtimestamp(parse_time(rfc3339), UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def _ooni_answer(answer: dict[str, Any]) -> dict[str, Any]:
    rtype = answer.get("rtype", "")
    key = {"A": "ipv4", "AAAA": "ipv6"}.get(rtype, "hostname")
    return {"answer_type": rtype, key: answer.get("value"), "ttl": answer.get("ttl")}


def _ooni_queries(dns: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not dns or dns.get("skipped"):
        return []
    engine, address = _resolver_address(str(dns.get("resolver", "")))
    t = 0.0
    queries = []
    for q in dns.get("queries") or []:
        duration = float(q.get("duration_s") or 0.0)
        queries.append(
            {
                "hostname": dns.get("name"),
                "query_type": q.get("qtype"),
                "engine": engine,
                "resolver_address": address,
                "failure": q.get("failure"),
                "rcode": q.get("rcode"),
                "answers": [_ooni_answer(a) for a in q.get("answers") or []],
                "t0": 0.0,
                "t": duration,
            }
        )
        t = max(t, duration)
    return queries


def _ooni_tcp(
    tcp: dict[str, Any] | None, start: float, control_ok: bool | None
) -> list[dict[str, Any]]:
    out = []
    t = start
    for a in (tcp or {}).get("attempts") or []:
        duration = float(a.get("duration_s") or 0.0)
        failure = a.get("failure")
        blocked = None if control_ok is None else (failure is not None and control_ok)
        out.append(
            {
                "ip": a.get("address"),
                "port": a.get("port"),
                "status": {"success": bool(a.get("ok")), "failure": failure, "blocked": blocked},
                "t0": t,
                "t": t + duration,
            }
        )
        t += duration
    return out


def _ooni_tls(
    tls: dict[str, Any] | None, tcp: dict[str, Any] | None, start: float
) -> list[dict[str, Any]]:
    if not tls:
        return []
    port = (tcp or {}).get("port") or 443
    address = tls.get("address")
    where = f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"
    return [
        {
            "address": where if address else None,
            "server_name": tls.get("server_name"),
            "tls_version": tls.get("version"),
            "cipher_suite": tls.get("cipher"),
            "negotiated_protocol": tls.get("alpn"),
            "failure": tls.get("failure"),
            "peer_certificates": [],  # we keep the leaf's names and hash, not its DER
            "lifeline_certificate": tls.get("certificate"),
            "t0": start,
            "t": start + float(tls.get("duration_s") or 0.0),
        }
    ]


def _ooni_requests(http: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One entry per request of the redirect chain, last request first (as OONI lists them)."""
    if not http:
        return []
    hops = list(http.get("redirects") or [])
    requests = [
        {
            "request": {"url": hop.get("url"), "method": "GET", "headers": {}},
            "response": {"code": hop.get("status"), "headers": {"Location": hop.get("location")}},
            "failure": None,
        }
        for hop in hops
    ]
    final_url = http.get("final_url") or http.get("url")
    body = http.get("body_head")
    length = http.get("body_length")
    truncated = bool(http.get("body_truncated")) or (
        body is not None and length is not None and len(body.encode()) < length
    )
    final_is_hop = bool(hops) and hops[-1].get("url") == final_url
    last: dict[str, Any] = {
        "request": {"url": final_url, "method": "GET", "headers": {}},
        "response": {
            "code": http.get("status"),
            "headers": dict(http.get("headers") or {}),
            "body": body,
            "body_is_truncated": truncated,
            "body_length": length,
        },
        "failure": http.get("failure"),
    }
    if final_is_hop:
        requests[-1] = last
    else:
        requests.append(last)
    return list(reversed(requests))


def _ooni_control(control: dict[str, Any] | None) -> dict[str, Any]:
    """The control measurement in the shape of OONI's test helper answer."""
    if not control:
        return {}
    dns, tcp, http = control.get("dns"), control.get("tcp"), control.get("http")
    out: dict[str, Any] = {}
    if dns:
        out["dns"] = {"failure": dns.get("failure"), "addrs": list(dns.get("addresses") or [])}
    if tcp:
        out["tcp_connect"] = {
            f"{a.get('address')}:{a.get('port')}": {
                "status": bool(a.get("ok")),
                "failure": a.get("failure"),
            }
            for a in tcp.get("attempts") or []
        }
    if http:
        out["http_request"] = {
            "body_length": http.get("body_length") if http.get("body_length") is not None else -1,
            "failure": http.get("failure"),
            "title": http.get("title") or "",
            "headers": dict(http.get("headers") or {}),
            "status_code": http.get("status") if http.get("status") is not None else -1,
        }
    return out


def _title_words(title: str | None) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", title or "") if len(w) >= TITLE_WORD_MIN}


def _comparisons(http: dict[str, Any] | None, control: dict[str, Any] | None) -> dict[str, Any]:
    """OONI's HTTP comparisons of our response with the control's; None where not computable."""
    c_http = (control or {}).get("http")
    keys = ("body_length_match", "status_code_match", "headers_match", "title_match")
    if not http or not c_http or not http.get("ok") or not c_http.get("ok"):
        return dict.fromkeys(keys)
    ours, theirs = http.get("body_length"), c_http.get("body_length")
    body = None
    if ours is not None and theirs is not None and max(ours, theirs) > 0:
        body = min(ours, theirs) / max(ours, theirs) > BODY_PROPORTION
    status = http.get("status") == c_http.get("status")
    h1 = set(http.get("headers") or {}) - _COMMON_HEADERS
    h2 = set(c_http.get("headers") or {}) - _COMMON_HEADERS
    headers = bool(h1 & h2) if h1 and h2 else None
    w1, w2 = _title_words(http.get("title")), _title_words(c_http.get("title"))
    title = (w1 == w2) if (w1 or w2) else None
    return {
        "body_length_match": body,
        "status_code_match": status,
        "headers_match": headers,
        "title_match": title,
    }


def _blocking(verdict: str, http: dict[str, Any] | None) -> str | bool | None:
    """OONI's `blocking` key for one of our verdicts (None where OONI cannot tell either)."""
    if verdict == Verdict.HTTP_BLOCKED:
        failed = http is not None and not http.get("ok")
        return "http-failure" if failed else "http-diff"
    return _BLOCKING.get(verdict)


def _accessible(verdict: str, http: dict[str, Any] | None) -> bool | None:
    """OONI's `accessible`: True when people get the page, False when blocked, None when unknown."""
    if verdict in (Verdict.OK, Verdict.THROTTLED):
        return True
    return False if _blocking(verdict, http) not in (None, False) else None


def _dns_consistency(verdict: str, control: dict[str, Any] | None) -> str | None:
    c_dns = (control or {}).get("dns")
    if not c_dns or not c_dns.get("ok"):
        return None
    return "inconsistent" if verdict == Verdict.DNS_BLOCKED else "consistent"


def ooni_record(record: dict[str, Any], *, country: str | None = None) -> dict[str, Any]:
    """A measurement record rendered as an OONI web_connectivity-style measurement (df-000)."""
    stages = record.get("stages") or {}
    dns, tcp, tls, http = (stages.get(k) for k in ("dns", "tcp", "tls", "http"))
    control = _flat(record.get("control"))
    verdict = str(record.get("verdict", ""))
    engine, resolver = _resolver_address(str((dns or {}).get("resolver", "")))
    tcp_start = float((dns or {}).get("duration_s") or 0.0)
    tls_start = tcp_start + float((tcp or {}).get("duration_s") or 0.0)
    control_tcp = (control or {}).get("tcp")
    cc = country or record.get("vantage_country") or record.get("country") or "ZZ"
    accessible = _accessible(verdict, http)
    test_keys: dict[str, Any] = {
        "client_resolver": None,
        "queries": _ooni_queries(dns),
        "tcp_connect": _ooni_tcp(
            tcp, tcp_start, None if not control_tcp else bool(control_tcp.get("ok"))
        ),
        "tls_handshakes": _ooni_tls(tls, tcp, tls_start),
        "requests": _ooni_requests(http),
        "control": _ooni_control(control),
        "control_failure": None if control else "lifeline: no control measurement",
        "dns_experiment_failure": (dns or {}).get("failure"),
        "http_experiment_failure": (http or {}).get("failure") or (tls or {}).get("failure"),
        "dns_consistency": _dns_consistency(verdict, control),
        **_comparisons(http, control),
        "blocking": _blocking(verdict, http),
        "accessible": accessible,
        "lifeline_verdict": verdict,
        "lifeline_reason": record.get("reason", ""),
    }
    return {
        "data_format_version": OONI_DATA_FORMAT,
        "measurement_start_time": _ooni_time(str(record["time"])),
        "test_start_time": _ooni_time(str(record["time"])),
        "probe_asn": "AS0",
        "probe_cc": str(cc).upper(),
        "probe_ip": "127.0.0.1",
        "input": record.get("target"),
        "test_name": "web_connectivity",
        "test_version": OONI_TEST_VERSION,
        "software_name": "lifeline",
        "software_version": record.get("lifeline_version") or __version__,
        "resolver_ip": _host_of(resolver) if engine in ("udp", "tcp", "dot") else "",
        "test_runtime": record.get("duration_s"),
        "annotations": {
            "engine_name": "lifeline",
            "lifeline_schema": str(record.get("schema", "")),
            "lifeline_service": str(record.get("service", "")),
            "lifeline_vantage": str(record.get("vantage", "")),
            "lifeline_verdict": verdict,
        },
        "test_keys": test_keys,
    }


# --- classify (replay a log) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reclassified:
    """One record judged again: what it was, what it is now."""

    lineno: int
    service: str
    target: str
    vantage: str
    old: str
    new: str
    reason: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(slots=True)
class _Round:
    """The records of one minute: a round, as far as a log can tell."""

    items: list[tuple[int, Result]] = field(default_factory=list)


def reclassify(
    stream: IO[bytes],
    *,
    fingerprints: FingerprintSet,
    throttle_ratio: float,
    control: str | None = None,
    bad_lines: list[BadLine] | None = None,
) -> Iterator[Reclassified]:
    """Judge every record of a JSONL stream again, in rounds of one minute.

    Records of the same minute form a round: the ``canaries`` records of a
    vantage in it are that vantage's canaries, and the other vantages'
    records of the same target are its peers. A round is judged once the
    log has moved two minutes past it, so memory holds a few minutes of
    records, not the log. ``control`` names the control vantage (else it is
    learnt from the records' ``control`` measurements). Unreadable lines are
    appended to ``bad_lines`` and skipped.
    """
    rounds: dict[int, _Round] = {}
    control_name = control
    for lineno, item in read_lines(stream):
        result = _parse(lineno, item, bad_lines)
        if result is None:
            continue
        if control_name is None and result.control is not None:
            control_name = result.control.vantage
        minute = int(parse_time(result.measurement.time) // 60)
        rounds.setdefault(minute, _Round()).items.append((lineno, result))
        for done in [k for k in rounds if k < minute - 1]:
            yield from _judge_round(rounds.pop(done), fingerprints, throttle_ratio, control_name)
    for key in sorted(rounds):
        yield from _judge_round(rounds[key], fingerprints, throttle_ratio, control_name)


def _parse(lineno: int, item: dict[str, Any] | BadLine, bad: list[BadLine] | None) -> Result | None:
    if isinstance(item, BadLine):
        problem: BadLine | None = item
        result = None
    else:
        try:
            result = Result.from_dict(item)
            parse_time(result.measurement.time)
            problem = None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            result = None
            problem = BadLine(lineno, f"not a measurement record: {type(exc).__name__}: {exc}")
    if problem is not None and bad is not None:
        bad.append(problem)
    return result


def _judge_round(
    batch: _Round, fingerprints: FingerprintSet, throttle_ratio: float, control: str | None
) -> Iterator[Reclassified]:
    from probes.classify import classify

    canaries: dict[str, list[Measurement]] = {}
    by_target: dict[tuple[str, str], list[Measurement]] = {}
    for _, r in batch.items:
        m = r.measurement
        by_target.setdefault((m.service, m.target), []).append(m)
        if m.service == CANARY_SERVICE:
            canaries.setdefault(m.vantage, []).append(m)
    for lineno, r in sorted(batch.items, key=lambda item: item[0]):
        m = r.measurement
        is_control = control is not None and m.vantage == control
        peers = [
            p for p in by_target[(m.service, m.target)] if p.vantage not in (m.vantage, control)
        ]
        judgement = classify(
            m,
            control=r.control,
            canaries=canaries.get(m.vantage, []),
            fingerprints=fingerprints,
            throttle_ratio=throttle_ratio,
            is_control=is_control,
            control_canaries=canaries.get(control, []) if control and not is_control else (),
            peers=peers,
        )
        yield Reclassified(
            lineno,
            m.service,
            m.target,
            m.vantage,
            r.verdict.value,
            Verdict(judgement.verdict).value,
            judgement.reason,
        )


def _input_stream(name: str) -> IO[bytes]:
    """The log to read: a file (plain or .gz) or stdin ('-')."""
    if name == "-":
        return sys.stdin.buffer
    if name.endswith(".gz"):
        return gzip.open(name, "rb")  # type: ignore[return-value]
    return open(name, "rb")


def run_classify(args: argparse.Namespace) -> int:
    """`lifeline classify`: replay a JSONL log; exit 0 unchanged, 1 changed, 2 unreadable input."""
    from probes.fingerprints import FingerprintSet

    config = _load_config(args.config) if args.config else None
    if args.config and config is None:
        return EXIT_USAGE
    fingerprints = FingerprintSet.build(config.fingerprints) if config else FingerprintSet.build()
    ratio = config.defaults.throttle_ratio if config else DEFAULT_THROTTLE_RATIO
    control = config.control.name if config and config.control else None
    bad: list[BadLine] = []
    total = changed = bad_lines = 0
    try:
        stream = _input_stream(args.file)
    except OSError as exc:
        print(f"lifeline: {args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for item in reclassify(
            stream, fingerprints=fingerprints, throttle_ratio=ratio, control=control, bad_lines=bad
        ):
            total += 1
            if item.changed:
                changed += 1
                print(
                    f"line {item.lineno}: {item.target} from {item.vantage}: "
                    f"{item.old} -> {item.new} ({item.reason})"
                )
            bad_lines += _report_bad(args.file, bad)
        bad_lines += _report_bad(args.file, bad)
    except (OSError, EOFError) as exc:
        print(f"lifeline: {args.file}: cannot read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    summary = f"{total} records, {changed} changed"
    if bad_lines:
        summary += f", {bad_lines} unreadable lines skipped"
    print(summary)
    if bad_lines:
        return EXIT_USAGE
    return EXIT_FOUND if changed else EXIT_OK


def _report_bad(name: str, bad: list[BadLine]) -> int:
    """Print and forget the bad lines met so far; returns how many there were."""
    for problem in bad:
        print(f"lifeline: {name}: line {problem.lineno}: {problem.error}", file=sys.stderr)
    count = len(bad)
    bad.clear()
    return count


# --- incidents ------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A duration in words a person reads at a glance: '45s', '13m', '2h 13m', '3d 4h'."""
    s = max(0, int(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def incidents(
    changes: Iterable[VerdictChange],
    *,
    now: float | None = None,
    last_measured: Mapping[tuple[str, str, str], str] | None = None,
) -> list[dict[str, Any]]:
    """Non-ok periods of a timeline, newest first, with their durations (ongoing ones until now).

    ``last_measured`` (the store's latest measurement time per key) says when an
    ongoing period was last confirmed: "ongoing" from a daemon that stopped an hour
    ago must not read as "blocked right now".
    """
    now = time.time() if now is None else now
    seen = last_measured or {}
    out: list[tuple[float, dict[str, Any]]] = []
    for c in changes:
        if c.verdict == Verdict.OK:
            continue
        start = parse_time(c.since)
        end = now if c.until is None else parse_time(c.until)
        out.append(
            (
                start,
                {
                    "service": c.service,
                    "target": c.target,
                    "vantage": c.vantage,
                    "verdict": c.verdict,
                    "reason": c.reason,
                    "since": c.since,
                    "until": c.until,
                    "ongoing": c.until is None,
                    "last_measured": (
                        seen.get((c.service, c.target, c.vantage)) if c.until is None else None
                    ),
                    "duration_s": round(max(0.0, end - start), 3),
                    "duration": format_duration(end - start),
                },
            )
        )
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in out]


def _incident_table(items: Sequence[dict[str, Any]]) -> str:
    if not items:
        return "no incidents: every recorded period is ok\n"
    head = (
        "SINCE", "UNTIL", "DURATION", "SERVICE", "TARGET", "VANTAGE", "VERDICT",
        "LAST MEASURED", "REASON",
    )  # fmt: skip
    rows = [
        (
            i["since"],
            "ongoing" if i["ongoing"] else i["until"],
            i["duration"],
            i["service"],
            i["target"],
            i["vantage"],
            i["verdict"],
            (i["last_measured"] or "unknown") if i["ongoing"] else "-",
            i["reason"],
        )
        for i in items
    ]
    last = len(head) - 1  # the reason is not padded
    widths = [max(len(head[k]), *(len(str(r[k])) for r in rows)) for k in range(last)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + "  " + head[last]]
    for r in rows:
        lines.append(
            "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[last]
        )
    ongoing = sum(1 for i in items if i["ongoing"])
    lines += ["", f"{len(items)} incidents, {ongoing} ongoing"]
    return "\n".join(lines) + "\n"


def run_incidents(args: argparse.Namespace) -> int:
    """`lifeline incidents`: what was blocked where, how, from when to when."""
    resolved = _resolve_data(args)
    if resolved is None:
        return EXIT_USAGE
    store = _open_existing(resolved[0])
    if store is None:
        return EXIT_FOUND
    try:
        seen = {(r["service"], r["target"], r["vantage"]): r["time"] for r in store.current()}
        items = incidents(store.changes(), last_measured=seen)
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_FOUND
    finally:
        store.close()
    if args.format == "json":
        sys.stdout.write(
            json.dumps({"schema": INCIDENTS_SCHEMA, "incidents": items}, indent=2) + "\n"
        )
    else:
        sys.stdout.write(_incident_table(items))
    sys.stdout.flush()
    return EXIT_OK

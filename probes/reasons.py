"""The sentences of the classifier's reasons: what failed, what the control did.

One human sentence per verdict is the point of a reason; these are its parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from probes.observe import STATUS, Break, Case, addresses_of, stage_label
from probes.records import DNSStage, HTTPStage, Measurement, TCPStage, TLSStage
from probes.stages import STAGES

__all__ = [
    "capitalised",
    "cert_names",
    "control_did",
    "control_status_clause",
    "expected_text",
    "listing",
    "percent_text",
    "quoted",
    "rate_text",
    "reached_text",
    "size_text",
    "status_text",
    "tcp_target",
    "vs_control_answers",
    "what_failed",
]


def what_failed(m: Measurement, brk: Break) -> str:
    """'TCP connect to 127.0.0.10:443 failed with connection_reset' and the like."""
    if brk.stage == "dns":
        return f"DNS failed with {brk.failure}"
    if brk.stage == "tcp":
        return f"TCP connect{tcp_target(m)} failed with {brk.failure}"
    if brk.stage == "tls":
        tls = m.record(TLSStage)
        sni = tls.server_name if tls is not None else None
        return f"the TLS handshake{f' (SNI {sni})' if sni else ''} failed with {brk.failure}"
    if brk.stage == "http":
        http = m.record(HTTPStage)
        sent = http is not None and http.request_sent
        return f"HTTP failed with {brk.failure}{' after the request was sent' if sent else ''}"
    if brk.stage != STATUS:  # a stage of the table without a sentence of its own
        return f"{stage_label(brk.stage)} failed with {brk.failure}"
    return f"the response had {brk.failure}, not {expected_text(m)}"


def expected_text(m: Measurement) -> str:
    if not m.expect_status:
        return "a status below 400"
    if len(m.expect_status) == 1:
        return f"the expected {m.expect_status[0]}"
    return "one of the expected " + ", ".join(map(str, m.expect_status))


def tcp_target(m: Measurement) -> str:
    tcp = m.record(TCPStage)
    if tcp is None or not tcp.attempts:
        return ""
    last = tcp.attempts[-1]
    host = f"[{last.address}]" if ":" in last.address else last.address
    more = f" (and {len(tcp.attempts) - 1} other addresses)" if len(tcp.attempts) > 1 else ""
    return f" to {host}:{last.port}{more}"


def control_did(case: Case, brk: Break) -> str:
    """The control's success at the stage that failed here."""
    ctl = case.control
    if ctl is None:
        return ""
    if brk.stage == "dns":
        return f"while the control resolved it to {listing(addresses_of(ctl.record(DNSStage)))}"
    if brk.stage == "tcp":
        return "while the control connected"
    if brk.stage == "tls":
        return "while the control completed it"
    if brk.stage not in ("http", STATUS):
        return f"while the control's {stage_label(brk.stage)} stage worked"
    return f"while the control got {status_text(ctl.record(HTTPStage))}"


def vs_control_answers(case: Case) -> str:
    if case.control is None:
        return ""
    theirs = addresses_of(case.control.record(DNSStage))
    return f", while the control resolved it to {listing(theirs)}" if theirs else ""


def control_status_clause(case: Case) -> str:
    if case.control is None or case.control.record(HTTPStage) is None:
        return ""
    return f", while the control got {status_text(case.control.record(HTTPStage))}"


def cert_names(case: Case) -> str:
    tls = case.obs.record(TLSStage)
    cert = tls.certificate if tls is not None else None
    if cert is None:
        return ""
    names = list(dict.fromkeys([*cert.san, *([cert.subject_cn] if cert.subject_cn else [])]))
    if not names:
        return ""
    return f", certificate for {listing(names)}"


def status_text(http: HTTPStage | None) -> str:
    if http is None or http.status is None:
        return "a response"
    return f"status {http.status}"


def reached_text(m: Measurement) -> str:
    http = m.record(HTTPStage)
    if http is not None and http.status is not None:
        return f"status {http.status}"
    for stage in reversed(STAGES.rows):
        if stage.record is not HTTPStage and stage.name in m.stages:
            return f"{stage.label} worked"
    return "nothing failed"


def listing(items: Iterable[str], limit: int = 3) -> str:
    values = sorted(items)
    if not values:
        return "nothing"
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def quoted(title: str | None) -> str:
    if title is None:
        return "(none)"
    text = " ".join(title.split())
    return '"' + (text[:57] + "..." if len(text) > 60 else text) + '"'


def size_text(n: int | None) -> str:
    return "unknown" if n is None else f"{n} bytes"


def rate_text(bps: float) -> str:
    for unit, size in (("MiB/s", 1024.0**2), ("KiB/s", 1024.0)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps:.0f} B/s"


def percent_text(fraction: float) -> str:
    """A share as a person writes it; a tiny one must not print as 0%."""
    pct = fraction * 100
    if not math.isfinite(pct) or pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 0.01:
        return f"{pct:.2g}%"
    return "under 0.01%"


def capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]

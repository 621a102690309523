"""The drill-down page (``/target``): one (target, vantage)'s verdict, history and evidence.

Each stored measurement becomes a record of plain text pieces, stage by stage
beside the control's; ``templates/target.html`` lays them out (autoescaped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from exporter.page.render import (
    Since,
    axis,
    band_row,
    cell_view,
    change_view,
    legend,
    render,
    since_of,
)
from exporter.page.source import ChangeRow
from exporter.page.timeline import timelines
from exporter.page.view import (
    DEFAULT_HOURS,
    DRILL_MEASUREMENTS,
    Status,
    ago,
    build_board,
    css,
    look,
    parse_time,
    text,
    verdict_label,
)
from probes.records import DNSStage, HTTPStage, Result, StageRecord, TCPStage, TLSStage
from probes.stages import STAGES

__all__ = ["render_target_page"]


@dataclass(frozen=True, slots=True)
class Frag:
    """A piece of a value: plain text, ``code`` or a ``diff`` note (``<em class="diff">``)."""

    kind: Literal["text", "code", "diff"]
    text: str


@dataclass(frozen=True, slots=True)
class KV:
    """One row of a stage's details: its lines, joined by ``<br>`` or by arrows (redirects)."""

    key: str
    lines: list[list[Frag]]
    arrows: bool = False


def _t(value: Any) -> Frag:
    return Frag("text", text(value))


def _code(value: Any) -> Frag:
    return Frag("code", text(value))


def _kv(rows: Sequence[KV]) -> list[KV]:
    """The rows that have something to show."""
    return [
        r
        for r in rows
        if len(r.lines) > 1 or any(f.kind != "text" or f.text for line in r.lines for f in line)
    ]


def _one(key: str, value: Any) -> KV:
    return KV(key, [[_t(value)]])


def _dns_detail(stage: DNSStage, other: DNSStage | None) -> list[KV]:
    """Answers per query, marking addresses the other side (control) did not see."""
    theirs = set(other.addresses) if other is not None else set()
    addrs: list[list[Frag]] = []
    for a in stage.addresses:
        line = [_code(a)]
        if other is not None and a not in theirs:
            line += [Frag("text", " "), Frag("diff", "not in the other column")]
        addrs.append(line)
    queries: list[list[Frag]] = []
    for q in stage.queries:
        answers = ", ".join(text(a.value) for a in q.answers)
        fail = f" ({text(q.failure)})" if q.failure else ""
        rcode = text(q.rcode or "no reply")
        queries.append([_t(f"{text(q.qtype)}: {rcode}{fail} {answers}")])
    return _kv(
        [
            _one("resolver", stage.resolver),
            _one("name", stage.name),
            KV("addresses", addrs or [[_t("none")]]),
            KV("queries", queries),
        ]
    )


def _tcp_detail(stage: TCPStage, other: TCPStage | None) -> list[KV]:
    attempts: list[list[Frag]] = []
    for a in stage.attempts:
        res = "connected" if a.ok else text(a.failure or "failed")
        attempts.append([_code(f"{text(a.address)}:{text(a.port)}"), _t(" " + res)])
    return _kv(
        [
            _one("connected to", stage.address or ""),
            _one("via proxy", "yes" if stage.via_proxy else ""),
            KV("attempts", attempts),
        ]
    )


def _tls_detail(stage: TLSStage, other: TLSStage | None) -> list[KV]:
    cert = stage.certificate
    received = stage.bytes_received
    return _kv(
        [
            _one("server name (SNI)", stage.server_name or ""),
            _one("version", stage.version or ""),
            _one("certificate", (cert.subject_cn if cert else None) or ""),
            _one("names", ", ".join(text(n) for n in (cert.san if cert else [])[:8])),
            _one("issuer", (cert.issuer if cert else None) or ""),
            _one("bytes received", received if received is not None else ""),
        ]
    )


def _http_detail(stage: HTTPStage, other: HTTPStage | None) -> list[KV]:
    size = stage.body_length
    size_text = (
        f"{size} bytes" + (" (truncated)" if stage.body_truncated else "")
        if size is not None
        else ""
    )
    bps = stage.throughput_bps
    speed = (
        f"{float(bps) / 1024:.1f} KiB/s"
        if isinstance(bps, int | float) and math.isfinite(bps)
        else ""
    )
    hops = [[_t(f"{text(h.status)} "), _code(h.url)] for h in stage.redirects]
    final = stage.final_url
    return _kv(
        [
            _one("status", stage.status if stage.status is not None else ""),
            _one("title", stage.title or ""),
            _one("body size", size_text),
            _one("throughput", speed),
            KV("final URL", [[_code(final)]] if final else []),
            KV("redirects", hops, arrows=True),
            _one(
                "failed after the request was sent",
                "yes" if stage.request_sent and not stage.ok else "",
            ),
        ]
    )


#: (record, the other side's record of the same stage) -> the rows shown for it.
_Detail = Callable[[Any, Any], list[KV]]

#: The details shown for the built-in stages' records; a stage of the table
#: without an entry shows its outcome and duration only.
_DETAILS: dict[type, _Detail] = {
    DNSStage: _dns_detail,
    TCPStage: _tcp_detail,
    TLSStage: _tls_detail,
    HTTPStage: _http_detail,
}


def _no_details(stage: Any, other: Any) -> list[KV]:
    return []


@dataclass(frozen=True, slots=True)
class StageCell:
    """One stage on one side: did not run, ok, or failed (how), its duration and details."""

    ran: bool
    ok: bool = False
    failure: str = ""
    duration: str = ""
    details: list[KV] = field(default_factory=list)


def _duration(stage: StageRecord) -> str:
    d = stage.duration_s
    return f"{float(d) * 1000:.0f} ms" if isinstance(d, int | float) and math.isfinite(d) else ""


def _stage_cell(stage: StageRecord | None, other: StageRecord | None, detail: _Detail) -> StageCell:
    if stage is None:
        return StageCell(False)
    return StageCell(
        True,
        bool(stage.ok),
        text(stage.failure or "unknown"),
        _duration(stage),
        detail(stage, other),
    )


@dataclass(frozen=True, slots=True)
class StageRow:
    name: str
    cells: list[StageCell]


@dataclass(frozen=True, slots=True)
class MeasurementView:
    """One measurement: verdict and reason, then each stage beside the control's."""

    stamp: Since | None
    css: str
    mark: str
    label: str
    reason: str
    error: str
    control: str | None  # the control vantage's name; None when there is no control
    rows: list[StageRow]


def measurement_view(result: Result, now: datetime) -> MeasurementView:
    """One stored measurement (decoded once, at the store) beside its control's."""
    m, control = result.measurement, result.control
    rows = []
    for stage in STAGES:
        detail = _DETAILS.get(stage.record, _no_details)
        a = m.stages.get(stage.name)
        b = control.stages.get(stage.name) if control is not None else None
        if a is None and b is None:
            continue
        cells = [_stage_cell(a, b, detail)] + ([_stage_cell(b, a, detail)] if control else [])
        rows.append(StageRow(stage.label, cells))
    verdict = result.verdict.value
    return MeasurementView(
        stamp=since_of(parse_time(m.time), now),
        css=css(verdict),
        mark=look(verdict).mark,
        label=verdict_label(verdict),
        reason=result.reason,
        error=text(m.error) if m.error else "",
        control=control.vantage if control is not None else None,
        rows=rows,
    )


def render_target_page(
    status: Status | Mapping[str, Any],
    changes: Sequence[ChangeRow],
    measurements: Sequence[Result],
    *,
    service: str,
    target: str,
    vantage: str,
    now: datetime,
    hours: float = DEFAULT_HOURS,
    static_v: str = "1",
) -> str:
    """The evidence for one (target, vantage): its verdict, its history, its last measurements."""
    now = now.astimezone(UTC)
    board = build_board(status)
    current = [c for c in board.cells.get((service, vantage), []) if c.target == target]
    mine = [r for r in changes if (r.service, r.target, r.vantage) == (service, target, vantage)]
    tl = timelines(mine, now - timedelta(hours=hours), now)
    recent = sorted(measurements, key=lambda r: r.measurement.time, reverse=True)
    return render(
        "target.html",
        title=f"{service} at {vantage} — lifeline",
        static_v=static_v,
        back=quote("s-" + service, safe=""),
        service=service,
        target=target,
        vantage=vantage,
        current=cell_view(current[:1], now, per_target=True) if current else None,
        hours_text=ago(hours * 3600),
        band=band_row(tl.by_target.get((service, target, vantage), []), tl.start, tl.end, vantage),
        axis=axis(tl.start, tl.end, now),
        history=[change_view(r, now) for r in sorted(mine, key=lambda r: r.since, reverse=True)],
        evidence=[measurement_view(r, now) for r in recent[:DRILL_MEASUREMENTS]],
        legend=legend(),
    )

"""The status page: what an incident responder opens first (``lifeline serve`` at ``/``).

One screen answers "which services are blocked from which networks, how,
since when, and is it getting worse": a matrix of services by vantages (the
worst verdict of each service's targets, in words, a glyph and a colour), a
timeline of verdict bands per service, recent changes, and a drill-down with
the stage-by-stage evidence of one (target, vantage).

Everything is rendered on the server by pure functions of the status document
and the store's verdict changes, so the page is complete without JavaScript
and testable without a browser. ``static/page.js`` only adds live updates
(it polls ``/api/v1/status`` and patches the cells that changed), the
clipboard button and keyboard navigation. Every value shown may come from a
hostile network (titles, reasons, even names), so every value is escaped, the
page carries no inline script, and a Content-Security-Policy forbids any.
"""

from __future__ import annotations

import bisect
import hashlib
import html
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from probes.records import Verdict

__all__ = [
    "TIMELINE_SCHEMA",
    "ChangeRow",
    "PageSource",
    "add_page_routes",
    "render_page",
    "render_target_page",
    "summary_text",
    "timeline",
    "verdict_label",
]

TIMELINE_SCHEMA = "lifeline.timeline/1"

_DEFAULT_HOURS = 24.0
_MAX_HOURS = 31 * 24.0
_DEFAULT_POLL_S = 5.0
_RECENT_CHANGES = 30  # rows of the "recent changes" list
_DRILL_MEASUREMENTS = 10  # measurements shown on the drill-down page
_TREND_WINDOW = timedelta(hours=1)  # "is it getting worse": now against this long ago
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_STATIC_TYPES = {"page.js": "text/javascript", "page.css": "text/css"}


# --- what the server gives us ---------------------------------------------------


class ChangeRow(Protocol):
    """One period of a verdict (``exporter.store.VerdictChange`` has this shape)."""

    @property
    def service(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def previous(self) -> str | None: ...
    @property
    def since(self) -> str: ...
    @property
    def until(self) -> str | None: ...
    @property
    def reason(self) -> str: ...


class PageSource(Protocol):
    """What ``serve`` hands the page: the current status, the timeline, the evidence."""

    async def status(self) -> dict[str, Any]:
        """The ``/api/v1/status`` document."""
        ...

    async def changes(self, *, since: str | None) -> Sequence[ChangeRow]:
        """Verdict periods still going on at or after ``since`` (all when None)."""
        ...

    async def measurements(
        self, *, service: str, target: str, vantage: str, limit: int
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` ``Result.to_dict()`` records of one (target, vantage)."""
        ...

    async def window(self) -> Mapping[str, Any] | None:
        """The ``lifeline.window/1`` document for a 1 h window (None when there is none)."""
        ...


# --- verdicts: how each one looks (the single table the page and page.js use) ----


@dataclass(frozen=True, slots=True)
class _Look:
    label: str  # the verdict in words
    mark: str  # a glyph, so colour is never the only signal
    rank: int  # higher is worse: a cell shows its worst target
    meaning: str


_LOOKS: dict[str, _Look] = {
    Verdict.DNS_BLOCKED: _Look(
        "DNS blocked", "✕", 9, "DNS lies or stays silent while the control resolves"
    ),
    Verdict.TCP_BLOCKED: _Look("TCP blocked", "✕", 9, "connections fail; the control connects"),
    Verdict.TLS_BLOCKED: _Look(
        "TLS blocked", "✕", 9, "TLS handshake cut (SNI filtering); the control completes it"
    ),
    Verdict.HTTP_BLOCKED: _Look(
        "HTTP blocked", "✕", 9, "block page, HTTP 451 or a cut after the request"
    ),
    Verdict.THROTTLED: _Look("Throttled", "≈", 7, "arrives, far slower than at the control"),
    Verdict.VANTAGE_DOWN: _Look(
        "Vantage down", "▼", 6, "every canary fails too: a shutdown or a dead vantage"
    ),
    Verdict.SERVICE_DOWN: _Look(
        "Service down", "▽", 5, "fails from the control as well: an outage, not censorship"
    ),
    Verdict.UNREACHABLE: _Look("Unreachable", "!", 4, "fails, and there is no control to tell why"),
    Verdict.ANOMALY: _Look("Anomaly", "?", 3, "differs from the control, not clearly blocking"),
    Verdict.ERROR: _Look("Error", "!", 2, "the measurement itself could not be made"),
    Verdict.OK: _Look("OK", "✓", 0, "reachable and consistent with the control"),
}
_UNKNOWN_RANK = 1


def _look(verdict: str) -> _Look:
    """How a verdict looks; a verdict this page does not know is shown as its own name."""
    return _LOOKS.get(verdict) or _Look(verdict, "·", _UNKNOWN_RANK, "")


def verdict_label(verdict: str) -> str:
    """The verdict in words (``dns_blocked`` -> ``DNS blocked``)."""
    return _look(verdict).label


def _css(verdict: str) -> str:
    """A class name for the verdict's colour; anything unexpected gets a neutral one."""
    return "v-" + verdict if verdict in _LOOKS else "v-unknown"


def _is_problem(verdict: str) -> bool:
    return verdict != Verdict.OK


# --- time -------------------------------------------------------------------------


def _parse_time(text: Any) -> datetime | None:
    """An aware UTC datetime from RFC 3339 text, or None when it is missing or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _rfc3339(dt: datetime) -> str:
    from probes.timefmt import rfc3339

    return rfc3339(dt, timespec="seconds")  # whole seconds: the page's and its API's form


def _ago(seconds: float) -> str:
    """A short duration a person reads at a glance: 45s, 12m, 1h20m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def _abs_utc(dt: datetime, now: datetime) -> str:
    """UTC clock time, with the date only when it is not today's (UTC)."""
    dt = dt.astimezone(UTC)
    if dt.date() == now.astimezone(UTC).date():
        return dt.strftime("%H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone, or None when it is unknown or not a valid key (names come from config)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _utc_offset(dt: datetime) -> str:
    off = dt.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h:02d}:{m:02d}"


# --- the status document, grouped -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cell:
    """The current verdict of one (service, target, vantage)."""

    service: str
    target: str
    vantage: str
    verdict: str
    reason: str
    since: datetime | None
    time: datetime | None
    since_text: str = ""  # as the status document wrote it: page.js compares it verbatim


@dataclass(frozen=True, slots=True)
class _VantageInfo:
    name: str
    control: bool = False
    country: str | None = None
    timezone: str | None = None
    up: bool | None = None  # False when every canary of the vantage fails


@dataclass(slots=True)
class _Board:
    """The status document grouped for the matrix: services x vantages, targets inside."""

    time: datetime | None
    services: list[str] = field(default_factory=list)
    vantages: list[_VantageInfo] = field(default_factory=list)
    targets: dict[str, list[str]] = field(default_factory=dict)
    cells: dict[tuple[str, str], list[_Cell]] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _cell(row: Mapping[str, Any]) -> _Cell:
    return _Cell(
        service=_text(row.get("service")),
        target=_text(row.get("target")),
        vantage=_text(row.get("vantage")),
        verdict=_text(row.get("verdict")) or Verdict.ERROR.value,
        reason=_text(row.get("reason")),
        since=_parse_time(row.get("since")),
        time=_parse_time(row.get("time")),
        since_text=_text(row.get("since")),
    )


def _vantage_infos(status: Mapping[str, Any], cells: Sequence[_Cell]) -> list[_VantageInfo]:
    """Vantages in the server's order (control first), then any only seen in results."""
    infos: dict[str, _VantageInfo] = {}
    for item in status.get("vantages") or []:
        if isinstance(item, str):
            infos.setdefault(item, _VantageInfo(item))
        elif isinstance(item, Mapping) and item.get("name"):
            name = _text(item["name"])
            infos.setdefault(
                name,
                _VantageInfo(
                    name,
                    bool(item.get("control")),
                    _text(item.get("country")) or None,
                    _text(item.get("timezone")) or None,
                    item["up"] if isinstance(item.get("up"), bool) else None,
                ),
            )
    rows = status.get("results") or []
    meta = {_text(r.get("vantage")): r for r in rows if isinstance(r, Mapping)}
    for c in cells:
        if c.vantage not in infos:
            r = meta.get(c.vantage, {})
            infos[c.vantage] = _VantageInfo(
                c.vantage, False, _text(r.get("country")) or None, _text(r.get("timezone")) or None
            )
    ordered = list(infos.values())
    return sorted(ordered, key=lambda v: not v.control)  # stable: control first, rest as given


def _board(status: Mapping[str, Any]) -> _Board:
    cells = [_cell(r) for r in status.get("results") or [] if isinstance(r, Mapping)]
    board = _Board(time=_parse_time(status.get("time")))
    board.vantages = _vantage_infos(status, cells)
    targets: dict[str, dict[str, None]] = {}
    for c in cells:
        targets.setdefault(c.service, {})[c.target] = None
        board.cells.setdefault((c.service, c.vantage), []).append(c)
    board.services = sorted(targets)
    board.targets = {s: list(t) for s, t in targets.items()}
    return board


def _worst(cells: Sequence[_Cell]) -> _Cell:
    """The cell's headline: the worst verdict; among equals, the one that began first."""
    far = datetime.max.replace(tzinfo=UTC)
    return min(cells, key=lambda c: (-_look(c.verdict).rank, c.since or far))


# --- timeline bands -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Band:
    verdict: str
    start: datetime
    end: datetime


def _periods(rows: Iterable[ChangeRow], start: datetime, end: datetime) -> list[_Band]:
    """The rows of one (service, target, vantage), clipped to [start, end], in time order."""
    out: list[_Band] = []
    for row in rows:
        s = _parse_time(row.since)
        if s is None:
            continue
        e = _parse_time(row.until) if row.until else end
        if e is None:
            continue
        s, e = max(s, start), min(e, end)
        if e > s:
            out.append(_Band(row.verdict, s, e))
    out.sort(key=lambda b: b.start)
    return out


def _at(bands: Sequence[_Band], starts: Sequence[datetime], t: datetime) -> str | None:
    """The verdict of the band covering instant t, or None (no data)."""
    i = bisect.bisect_right(starts, t) - 1
    if i >= 0 and bands[i].start <= t < bands[i].end:
        return bands[i].verdict
    return None


def _merge_worst(per_target: Sequence[Sequence[_Band]]) -> list[_Band]:
    """Worst-of-targets bands: at every instant the worst verdict any target had."""
    if len(per_target) == 1:
        return _join(list(per_target[0]))
    cuts = sorted({t for bands in per_target for b in bands for t in (b.start, b.end)})
    indexed = [(bands, [b.start for b in bands]) for bands in per_target]
    out: list[_Band] = []
    for a, b in itertools.pairwise(cuts):
        mid = a + (b - a) / 2
        present = [v for bands, starts in indexed if (v := _at(bands, starts, mid)) is not None]
        if present:
            out.append(_Band(max(present, key=lambda v: _look(v).rank), a, b))
    return _join(out)


def _join(bands: list[_Band]) -> list[_Band]:
    """Adjacent bands of the same verdict become one."""
    out: list[_Band] = []
    for b in bands:
        if out and out[-1].verdict == b.verdict and out[-1].end >= b.start:
            out[-1] = _Band(b.verdict, out[-1].start, max(out[-1].end, b.end))
        else:
            out.append(b)
    return out


@dataclass(slots=True)
class _Timelines:
    """Worst-of-targets bands per (service, vantage) and per (service, target, vantage)."""

    start: datetime
    end: datetime
    by_cell: dict[tuple[str, str], list[_Band]] = field(default_factory=dict)
    by_target: dict[tuple[str, str, str], list[_Band]] = field(default_factory=dict)


def _timelines(changes: Iterable[ChangeRow], start: datetime, end: datetime) -> _Timelines:
    grouped: dict[tuple[str, str, str], list[ChangeRow]] = {}
    for row in changes:
        grouped.setdefault((row.service, row.target, row.vantage), []).append(row)
    tl = _Timelines(start, end)
    per_cell: dict[tuple[str, str], list[list[_Band]]] = {}
    for key, rows in grouped.items():
        bands = _periods(rows, start, end)
        tl.by_target[key] = _join(bands)
        per_cell.setdefault((key[0], key[2]), []).append(bands)
    for cell, lists in per_cell.items():
        tl.by_cell[cell] = _merge_worst(lists)
    return tl


def _bands_json(bands: Sequence[_Band]) -> list[dict[str, str]]:
    return [
        {"verdict": b.verdict, "start": _rfc3339(b.start), "end": _rfc3339(b.end)} for b in bands
    ]


def timeline(
    changes: Iterable[ChangeRow], *, now: datetime, hours: float, service: str | None = None
) -> dict[str, Any]:
    """The ``/api/v1/timeline`` document: verdict bands over the last ``hours``.

    Per service and vantage the bands are worst-of-targets (what the matrix cell
    showed at each instant); per target they are that target's own verdicts.
    Gaps are times with no verdict on record.
    """
    end = now.astimezone(UTC)
    start = end - timedelta(hours=hours)
    rows = [r for r in changes if service is None or r.service == service]
    tl = _timelines(rows, start, end)
    services: dict[str, dict[str, Any]] = {}
    for (svc, van), bands in sorted(tl.by_cell.items()):
        entry = services.setdefault(svc, {"service": svc, "vantages": [], "targets": []})
        entry["vantages"].append({"vantage": van, "bands": _bands_json(bands)})
    for (svc, tgt, van), bands in sorted(tl.by_target.items()):
        services[svc]["targets"].append(
            {"target": tgt, "vantage": van, "bands": _bands_json(bands)}
        )
    return {
        "schema": TIMELINE_SCHEMA,
        "start": _rfc3339(start),
        "end": _rfc3339(end),
        "services": list(services.values()),
    }


# --- the matrix page -------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text for element content and quoted attribute values."""
    return html.escape(_text(value), quote=True)


def _drill_href(service: str, target: str, vantage: str) -> str:
    return "/target?" + urlencode({"service": service, "target": target, "vantage": vantage})


def _time_tags(since: datetime | None, now: datetime) -> str:
    """'since 1h20m · 00:10 UTC' as <time> elements page.js keeps current."""
    if since is None:
        return '<span class="since">since unknown</span>'
    iso = _rfc3339(since)
    return (
        f'<span class="since">for <time class="rel" datetime="{iso}">'
        f"{_ago((now - since).total_seconds())}</time> · since "
        f'<time class="abs" datetime="{iso}">{_abs_utc(since, now)}</time></span>'
    )


def _cell_html(cells: Sequence[_Cell], now: datetime, *, per_target: bool) -> str:
    """One matrix cell: the worst verdict in words, glyph and colour, a link to its evidence."""
    worst = _worst(cells)
    look = _look(worst.verdict)
    count = ""
    n = sum(1 for c in cells if c.verdict == worst.verdict)
    if not per_target and n < len(cells):  # only some targets: say how many
        count = f' <span class="n" title="targets with this verdict">{n}/{len(cells)}</span>'
    key = f'data-s="{_e(worst.service)}" data-v="{_e(worst.vantage)}"'
    if per_target:
        key += f' data-t="{_e(worst.target)}"'
    href = _drill_href(worst.service, worst.target, worst.vantage)
    return (
        f'<td class="c {_css(worst.verdict)}" {key} data-verdict="{_e(worst.verdict)}" '
        f'data-since="{_e(worst.since_text)}"><a href="{_e(href)}" '
        f'title="{_e(worst.target)}: {_e(worst.reason)}">'
        f'<span class="mark" aria-hidden="true">{look.mark}</span> '
        f'<span class="vl">{_e(look.label)}</span>{count} {_time_tags(worst.since, now)}</a></td>'
    )


def _empty_cell(service: str, vantage: str, target: str | None = None) -> str:
    key = f'data-s="{_e(service)}" data-v="{_e(vantage)}"'
    if target is not None:
        key += f' data-t="{_e(target)}"'
    return f'<td class="c v-none" {key} data-verdict=""><span class="vl">not measured</span></td>'


def _vantage_th(v: _VantageInfo, now: datetime) -> str:
    """Column head: name, control mark, country, and the vantage's local time (server-computed)."""
    parts = [f'<span class="vname">{_e(v.name)}</span>']
    if v.control:
        parts.append('<span class="ctl">control</span>')
    if v.up is False:
        parts.append('<span class="vdown">▼ down: every canary fails</span>')
    meta = []
    if v.country:
        meta.append(f'<abbr class="cc" title="country">{_e(v.country)}</abbr>')
    zone = _zone(v.timezone)
    if zone is not None:
        local = now.astimezone(zone)
        meta.append(
            f'<time class="local" data-tz="{_e(v.timezone)}" datetime="{_e(local.isoformat())}">'
            f"{local.strftime('%H:%M')}</time> "
            f'<span class="tz">{_e(v.timezone)} ({_utc_offset(local)})</span>'
        )
    elif v.timezone:
        meta.append(f'<span class="tz">{_e(v.timezone)} (unknown zone)</span>')
    if meta:
        parts.append('<span class="vmeta">' + " · ".join(meta) + "</span>")
    return f'<th scope="col" data-v="{_e(v.name)}">' + " ".join(parts) + "</th>"


def _service_tbody(board: _Board, service: str, now: datetime) -> str:
    """One service: its summary row, then one (hidden until expanded) row per target."""
    targets = board.targets.get(service, [])
    sid = "s-" + service
    head = f'<span class="sname">{_e(service)}</span>'
    if len(targets) > 1:
        head += (
            f' <a class="expand" href="#{_e(quote(sid, safe=""))}" aria-controls="{_e(sid)}" '
            f'aria-expanded="false">{len(targets)} targets</a>'
        )
    else:
        head += f' <span class="tname">{_e(targets[0] if targets else "")}</span>'
    row = [f'<tr class="srow"><th scope="row">{head}</th>']
    for v in board.vantages:
        cells = board.cells.get((service, v.name))
        row.append(
            _cell_html(cells, now, per_target=False) if cells else _empty_cell(service, v.name)
        )
    out = [f'<tbody id="{_e(sid)}" data-s="{_e(service)}">', "".join(row) + "</tr>"]
    if len(targets) > 1:
        out.extend(_target_row(board, service, t, now) for t in targets)
    out.append("</tbody>")
    return "".join(out)


def _target_row(board: _Board, service: str, target: str, now: datetime) -> str:
    row = [f'<tr class="trow"><th scope="row"><span class="tname">{_e(target)}</span></th>']
    for v in board.vantages:
        mine = [c for c in board.cells.get((service, v.name), []) if c.target == target]
        row.append(
            _cell_html(mine, now, per_target=True) if mine else _empty_cell(service, v.name, target)
        )
    return "".join(row) + "</tr>"


def _matrix(board: _Board, now: datetime, services: Sequence[str]) -> str:
    heads = "".join(_vantage_th(v, now) for v in board.vantages)
    body = "".join(_service_tbody(board, s, now) for s in services)
    if not services:
        body = (
            f'<tbody><tr><td colspan="{len(board.vantages) + 1}">No results yet.</td></tr></tbody>'
        )
    return (
        '<div class="matrix-wrap" tabindex="-1"><table class="matrix" id="matrix">'
        "<caption>Current verdict of each service (rows) from each vantage (columns): the worst of "
        "the service's targets, in words; expand a service for its targets, follow a cell for the "
        "evidence.</caption>"
        '<thead><tr><th scope="col" class="corner">service</th>'
        f"{heads}</tr></thead>{body}</table></div>"
    )


@dataclass(frozen=True, slots=True)
class _Counts:
    problems: int  # targets x vantages not ok
    total: int
    by_verdict: dict[str, int]


def _counts(board: _Board) -> _Counts:
    by: dict[str, int] = {}
    total = 0
    for cells in board.cells.values():
        for c in cells:
            by[c.verdict] = by.get(c.verdict, 0) + 1
            total += 1
    problems = sum(n for v, n in by.items() if _is_problem(v))
    return _Counts(problems, total, by)


def _problems_at(changes: Iterable[ChangeRow], t: datetime) -> tuple[int, int]:
    """(not ok, known): how many (target, vantage) had a verdict other than ok at instant t,
    and how many had any verdict then, by the timeline."""
    bad = known = 0
    for row in changes:
        s, u = _parse_time(row.since), _parse_time(row.until) if row.until else None
        if s is not None and s <= t and (u is None or t < u):
            known += 1
            bad += _is_problem(row.verdict)
    return bad, known


def _overview(board: _Board, changes: Sequence[ChangeRow], now: datetime) -> str:
    """Headline counts and the trend against an hour ago: is it getting worse?"""
    counts = _counts(board)
    parts = ", ".join(
        f'<span class="{_css(v)} chip">{_e(verdict_label(v))}: <b>{n}</b></span>'
        for v, n in sorted(counts.by_verdict.items(), key=lambda kv: (-_look(kv[0]).rank, kv[0]))
    )
    before, known = _problems_at(changes, now - _TREND_WINDOW)
    recent = sum(
        1
        for r in changes
        if r.previous is not None and (s := _parse_time(r.since)) and s > now - _TREND_WINDOW
    )
    if not known:
        trend, cls = (
            f"{counts.problems} not ok now; no verdicts on record from an hour ago.",
            "same",
        )
    elif counts.problems > before:
        trend, cls = f"Getting worse: {counts.problems} not ok now, {before} an hour ago.", "worse"
    elif counts.problems < before:
        trend, cls = f"Improving: {counts.problems} not ok now, {before} an hour ago.", "better"
    else:
        trend, cls = f"Unchanged: {counts.problems} not ok now and an hour ago.", "same"
    return (
        f'<section class="overview" aria-label="overview"><p id="counts"><b id="n-problems">'
        f'{counts.problems}</b> of <span id="n-total">{counts.total}</span> measurements '
        f'(target x vantage) not ok. {parts}</p><p class="trend {cls}" id="trend">{_e(trend)} '
        f"{recent} verdict change{'s' if recent != 1 else ''} in the last hour.</p></section>"
    )


def _change_li(row: ChangeRow, now: datetime) -> str:
    since, until = _parse_time(row.since), _parse_time(row.until)
    prev = f"{_e(verdict_label(row.previous))} → " if row.previous else ""
    if since is not None and until is not None:
        when = (
            f'<span class="since">from <time datetime="{_rfc3339(since)}">{_abs_utc(since, now)}'
            f'</time> to <time datetime="{_rfc3339(until)}">{_abs_utc(until, now)}</time> '
            f"({_ago((until - since).total_seconds())})</span>"
        )
    else:
        when = _time_tags(since, now)
    return (
        f'<li><span class="sname">{_e(row.service)}</span> at <span class="vname">{_e(row.vantage)}'
        f'</span>: {prev}<span class="{_css(row.verdict)} chip">'
        f"{_e(verdict_label(row.verdict))}</span>"
        f' {when} <a href="{_e(_drill_href(row.service, row.target, row.vantage))}">'
        f'<span class="tname">{_e(row.target)}</span></a></li>'
    )


def _recent_changes(changes: Sequence[ChangeRow], now: datetime) -> str:
    """The newest verdict changes, newest first (the first verdict ever seen is not a change)."""
    real = [r for r in changes if r.previous is not None]
    real.sort(key=lambda r: _parse_time(r.since) or now, reverse=True)
    items = "".join(_change_li(r, now) for r in real[:_RECENT_CHANGES])
    empty = '<li class="none">No verdict changes in this window.</li>'
    return (
        '<section aria-labelledby="h-changes"><h2 id="h-changes">Recent changes</h2>'
        f'<ol class="changes" id="changes">{items or empty}</ol></section>'
    )


_TL_W = 1000  # SVG user units across the window; bands stretch to the element's width


def _band_svg(bands: Sequence[_Band], start: datetime, end: datetime, label: str) -> str:
    """One row of bands as inline SVG; every band has a <title> with its verdict and times."""
    span = (end - start).total_seconds() or 1.0
    rects = []
    words = []
    for b in bands:
        x = (b.start - start).total_seconds() / span * _TL_W
        w = max((b.end - b.start).total_seconds() / span * _TL_W, 0.5)
        tip = f"{verdict_label(b.verdict)} {_rfc3339(b.start)} to {_rfc3339(b.end)}"
        rects.append(
            f'<rect class="{_css(b.verdict)}" x="{x:.2f}" y="0" width="{w:.2f}" height="10">'
            f"<title>{_e(tip)}</title></rect>"
        )
        words.append(f"{verdict_label(b.verdict)} from {b.start.strftime('%H:%M')}")
    aria = f"{label}: " + ("; ".join(words) if words else "no data")
    return (
        f'<svg class="bands" viewBox="0 0 {_TL_W} 10" preserveAspectRatio="none" role="img" '
        f'aria-label="{_e(aria)}">{"".join(rects)}</svg>'
    )


def _service_timeline(service: str, vantages: Sequence[_VantageInfo], tl: _Timelines) -> str:
    rows = []
    for v in vantages:
        bands = tl.by_cell.get((service, v.name), [])
        rows.append(
            f'<div class="tl-row" data-v="{_e(v.name)}"><span class="tl-v">{_e(v.name)}</span>'
            f"{_band_svg(bands, tl.start, tl.end, v.name)}</div>"
        )
    return (
        f'<section class="tl" data-s="{_e(service)}"><h3>{_e(service)}</h3>'
        f"{''.join(rows)}</section>"
    )


def _axis(start: datetime, end: datetime, now: datetime) -> str:
    mid = start + (end - start) / 2
    return (
        '<div class="tl-axis" aria-hidden="true"><span></span><span class="ticks">'
        f"<span>{_abs_utc(start, now)}</span><span>{_abs_utc(mid, now)}</span>"
        f"<span>now ({_abs_utc(end, now)})</span></span></div>"
    )


def _timeline_section(
    board: _Board, tl: _Timelines, services: Sequence[str], hours: float, now: datetime
) -> str:
    current = ' aria-current="page"'
    links = " ".join(
        f'<a href="/?hours={h}"{current if h == hours else ""}>{label}</a>'
        for h, label in ((6, "6 h"), (24, "24 h"), (72, "3 days"), (168, "7 days"))
    )
    body = "".join(_service_timeline(s, board.vantages, tl) for s in services)
    return (
        f'<section aria-labelledby="h-tl" id="timelines" data-hours="{hours:g}">'
        f'<h2 id="h-tl">Timeline, last {_e(_ago(hours * 3600))}</h2>'
        f'<p class="tl-links">Window: {links}. Each band is the '
        f"worst verdict of the service's targets at that time; blank is no data.</p>"
        f"{_axis(tl.start, tl.end, now)}{body}</section>"
    )


def _window_section(window: Mapping[str, Any] | None) -> str:
    """The least harmful maintenance window for the watched regions (`lifeline window`)."""
    windows = (window or {}).get("windows") or []
    if not windows or not isinstance(windows[0], Mapping):
        return ""
    best = windows[0]
    lines = "".join(f"<li>{_e(str(line))}</li>" for line in (best.get("explanation") or [])[:6])
    return (
        '<section aria-labelledby="h-window"><h2 id="h-window">Least harmful maintenance '
        "window</h2><p>If a service must go down for an hour in the next 72 hours, this hour "
        "hurts the watched regions least (people asleep, fewest other channels lost): "
        f'<a href="/api/v1/window">all candidates</a>.</p><ul class="window">{lines}</ul>'
        "</section>"
    )


def _legend() -> str:
    """The verdict table, shown as the legend; page.js reads labels, glyphs and ranks from it."""
    items = "".join(
        f'<div class="lg" data-verdict="{v}" data-label="{_e(k.label)}" data-mark="{k.mark}" '
        f'data-rank="{k.rank}"><dt><span class="{_css(v)} chip">'
        f'<span aria-hidden="true">{k.mark}</span> '
        f"{_e(k.label)}</span> <code>{v}</code></dt><dd>{_e(k.meaning)}</dd></div>"
        for v, k in sorted(_LOOKS.items(), key=lambda kv: -kv[1].rank)
    )
    return (
        '<section aria-labelledby="h-legend"><h2 id="h-legend">Verdicts</h2>'
        f'<dl id="legend">{items}</dl></section>'
    )


def _head(title: str, *, refresh_s: int | None, static_v: str) -> str:
    refresh = (
        f'<noscript><meta http-equiv="refresh" content="{refresh_s}"></noscript>'
        if refresh_s
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>{refresh}"
        f'<link rel="stylesheet" href="/static/page.css?v={static_v}">'
        f'<script src="/static/page.js?v={static_v}" defer></script></head>'
    )


def render_page(
    status: Mapping[str, Any],
    changes: Sequence[ChangeRow],
    *,
    now: datetime,
    hours: float = _DEFAULT_HOURS,
    poll_s: float = _DEFAULT_POLL_S,
    only_problems: bool = False,
    static_v: str = "1",
    window: Mapping[str, Any] | None = None,
) -> str:
    """The whole status page as HTML: a pure function of the status document and the timeline.

    ``changes`` are the verdict periods overlapping the last ``hours``; ``now``
    fixes "since" and local times so the output is reproducible.
    """
    now = now.astimezone(UTC)
    board = _board(status)
    services = board.services
    if only_problems:
        services = [
            s
            for s in services
            if any(
                _is_problem(c.verdict)
                for v in board.vantages
                for c in board.cells.get((s, v.name), [])
            )
        ]
    tl = _timelines(changes, now - timedelta(hours=hours), now)
    counts = _counts(board)
    title = f"({counts.problems}) lifeline status" if counts.problems else "lifeline status"
    updated = board.time or now
    notice = (
        "The first round of measurements is still running: cells fill in as results arrive."
        if status.get("ready") is False
        else ""
    )
    filt = (
        '<a href="/">show all services</a>'
        if only_problems
        else '<a href="/?only=problems">show only services with problems</a>'
    )
    return (
        _head(title, refresh_s=max(10, int(poll_s * 3)), static_v=static_v)
        + f'<body data-poll-ms="{int(poll_s * 1000)}" data-hours="{hours:g}">'
        '<a class="skip" href="#matrix">Skip to the matrix</a>'
        '<header><h1>lifeline status</h1><p class="meta">As of <time id="updated" '
        f'datetime="{_rfc3339(updated)}">{updated.strftime("%Y-%m-%d %H:%M:%S UTC")}</time> '
        '<span id="live" class="live" role="status">(server-rendered; refreshes every '
        f'{max(10, int(poll_s * 3))} s without JavaScript)</span></p><p class="tools">'
        '<button type="button" id="copy" hidden>Copy as text</button> '
        '<a href="/api/v1/summary.txt">summary as text</a> · '
        f'<a href="/api/v1/status">status JSON</a> · {filt}</p>'
        '<textarea id="copy-out" readonly hidden aria-label="summary text"></textarea>'
        f'<p id="notice" class="notice" role="status" aria-live="polite">{notice}</p>'
        "</header><main>"
        + _overview(board, changes, now)
        + _matrix(board, now, services)
        + _recent_changes(changes, now)
        + _window_section(window)
        + _timeline_section(board, tl, services, hours, now)
        + _legend()
        + "</main></body></html>\n"
    )


# --- the text summary -------------------------------------------------------------------


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def _plain(value: str, limit: int = 80) -> str:
    """Text safe to paste into a chat: one line, no control or bidi characters, bounded."""
    text = " ".join(_CONTROL_CHARS.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_text(status: Mapping[str, Any], *, now: datetime) -> str:
    """A timestamped snapshot a responder pastes into a chat; problems first, worst first.

    One line per (service, vantage) that is not ok; a vantage where every
    service is down is said once. Example line:
    ``twitter: dns_blocked at ir-mci (IR) since 00:10 UTC (1h20m), 2/3 targets``.
    """
    now = now.astimezone(UTC)
    board = _board(status)
    as_of = board.time or now
    lines: list[str] = []
    whole_down: set[str] = set()
    for v in board.vantages:
        worst = [_worst(cs) for (s, vn), cs in board.cells.items() if vn == v.name]
        if len(worst) > 1 and all(w.verdict == Verdict.VANTAGE_DOWN for w in worst):
            whole_down.add(v.name)
            first = min((w.since for w in worst if w.since), default=None)
            lines.append(
                f"{_plain(v.name)}{_where(v)}: vantage_down for all services{_since(first, now)}"
            )
    problems: list[tuple[int, str]] = []
    ok = 0
    for (service, vantage), cells in board.cells.items():
        if vantage in whole_down:
            continue
        w = _worst(cells)
        if not _is_problem(w.verdict):
            ok += 1
            continue
        n = sum(1 for c in cells if c.verdict == w.verdict)
        share = f", {n}/{len(cells)} targets" if len(cells) > 1 else ""
        info = next((v for v in board.vantages if v.name == vantage), _VantageInfo(vantage))
        text = (
            f"{_plain(service)}: {_plain(w.verdict)} at {_plain(vantage)}{_where(info)}"
            f"{_since(w.since, now)}{share}"
        )
        problems.append((-_look(w.verdict).rank, text))
    lines.extend(t for _, t in sorted(problems))
    cells_n = len(board.cells)
    head = (
        f"lifeline status {as_of.strftime('%Y-%m-%d %H:%M')} UTC — "
        f"{cells_n - ok} of {cells_n} service x vantage not ok"
    )
    tail = f"everything else ok ({ok})" if lines else f"all ok ({ok})"
    return "\n".join([head, *lines, tail]) + "\n"


def _where(v: _VantageInfo) -> str:
    return f" ({_plain(v.country, 8)})" if v.country else ""


def _since(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    return f" since {_abs_utc(since, now)} ({_ago((now - since).total_seconds())})"


# --- the drill-down page ----------------------------------------------------------------------


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list of already-escaped values."""
    return '<dl class="kv">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows if v) + "</dl>"


def _outcome(stage: Mapping[str, Any] | None) -> str:
    if stage is None:
        return '<span class="skipped">did not run</span>'
    if stage.get("ok"):
        return '<span class="v-ok chip"><span aria-hidden="true">✓</span> ok</span>'
    return (
        f'<span class="v-bad chip"><span aria-hidden="true">✕</span> failed: '
        f"<code>{_e(stage.get('failure') or 'unknown')}</code></span>"
    )


def _duration(stage: Mapping[str, Any]) -> str:
    d = stage.get("duration_s")
    return f"{float(d) * 1000:.0f} ms" if isinstance(d, int | float) and math.isfinite(d) else ""


def _dns_detail(stage: Mapping[str, Any], other: Mapping[str, Any] | None) -> str:
    """Answers per query, marking addresses the other side (control) did not see."""
    theirs = set(other.get("addresses") or []) if other is not None else set()
    addrs = []
    for a in stage.get("addresses") or []:
        flag = (
            ' <em class="diff">not in the other column</em>'
            if other is not None and a not in theirs
            else ""
        )
        addrs.append(f"<code>{_e(a)}</code>{flag}")
    queries = []
    for q in stage.get("queries") or []:
        if not isinstance(q, Mapping):
            continue
        answers = ", ".join(
            _e(a.get("value")) for a in q.get("answers") or [] if isinstance(a, Mapping)
        )
        fail = f" ({_e(q.get('failure'))})" if q.get("failure") else ""
        queries.append(f"{_e(q.get('qtype'))}: {_e(q.get('rcode') or 'no reply')}{fail} {answers}")
    return _kv(
        [
            ("resolver", _e(stage.get("resolver"))),
            ("name", _e(stage.get("name"))),
            ("addresses", "<br>".join(addrs) or "none"),
            ("queries", "<br>".join(queries)),
        ]
    )


def _tcp_detail(stage: Mapping[str, Any], other: Mapping[str, Any] | None) -> str:
    attempts = []
    for a in stage.get("attempts") or []:
        if isinstance(a, Mapping):
            res = "connected" if a.get("ok") else _e(a.get("failure") or "failed")
            attempts.append(f"<code>{_e(a.get('address'))}:{_e(a.get('port'))}</code> {res}")
    return _kv(
        [
            ("connected to", _e(stage.get("address") or "")),
            ("via proxy", "yes" if stage.get("via_proxy") else ""),
            ("attempts", "<br>".join(attempts)),
        ]
    )


def _tls_detail(stage: Mapping[str, Any], other: Mapping[str, Any] | None) -> str:
    raw = stage.get("certificate")
    cert: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    san = ", ".join(_e(s) for s in (cert.get("san") or [])[:8])
    received = stage.get("bytes_received")
    return _kv(
        [
            ("server name (SNI)", _e(stage.get("server_name") or "")),
            ("version", _e(stage.get("version") or "")),
            ("certificate", _e(cert.get("subject_cn") or "")),
            ("names", san),
            ("issuer", _e(cert.get("issuer") or "")),
            ("bytes received", _e(received) if received is not None else ""),
        ]
    )


def _http_detail(stage: Mapping[str, Any], other: Mapping[str, Any] | None) -> str:
    size = stage.get("body_length")
    size_text = (
        f"{size} bytes" + (" (truncated)" if stage.get("body_truncated") else "")
        if size is not None
        else ""
    )
    bps = stage.get("throughput_bps")
    speed = (
        f"{float(bps) / 1024:.1f} KiB/s"
        if isinstance(bps, int | float) and math.isfinite(bps)
        else ""
    )
    hops = " → ".join(
        f"{_e(h.get('status'))} <code>{_e(h.get('url'))}</code>"
        for h in stage.get("redirects") or []
        if isinstance(h, Mapping)
    )
    return _kv(
        [
            ("status", _e(stage.get("status") if stage.get("status") is not None else "")),
            ("title", _e(stage.get("title") or "")),
            ("body size", _e(size_text)),
            ("throughput", speed),
            (
                "final URL",
                f"<code>{_e(stage['final_url'])}</code>" if stage.get("final_url") else "",
            ),
            ("redirects", hops),
            (
                "failed after the request was sent",
                "yes" if stage.get("request_sent") and not stage.get("ok") else "",
            ),
        ]
    )


_STAGES = (
    ("dns", "DNS", _dns_detail),
    ("tcp", "TCP", _tcp_detail),
    ("tls", "TLS", _tls_detail),
    ("http", "HTTP", _http_detail),
)


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """The value when it is a JSON object, else None (stored records are not trusted)."""
    return value if isinstance(value, Mapping) else None


def _stage_cell(stage: Any, other: Any, detail: Any) -> str:
    st = stage if isinstance(stage, Mapping) else None
    ot = other if isinstance(other, Mapping) else None
    if st is None:
        return f"<td>{_outcome(None)}</td>"
    return f'<td>{_outcome(st)} <span class="dur">{_duration(st)}</span>{detail(st, ot)}</td>'


def _measurement_html(record: Mapping[str, Any], now: datetime, vantage: str) -> str:
    """One measurement: verdict and reason, then each stage side by side with the control's."""
    verdict = _text(record.get("verdict"))
    when = _parse_time(record.get("time"))
    control = _mapping(record.get("control"))
    mine = _mapping(record.get("stages")) or {}
    # the control is a Measurement.to_dict(): its stages are top-level keys
    theirs = (_mapping(control.get("stages")) or control if control else None) or {}
    ctl_name = _text(control.get("vantage")) if control else ""
    heads = f'<th scope="col">{_e(vantage)}</th>' + (
        f'<th scope="col">control ({_e(ctl_name)})</th>' if control else ""
    )
    rows = []
    for key, name, detail in _STAGES:
        a, b = mine.get(key), theirs.get(key) if control else None
        if a is None and b is None:
            continue
        cells = _stage_cell(a, b, detail) + (_stage_cell(b, a, detail) if control else "")
        rows.append(f'<tr><th scope="row">{name}</th>{cells}</tr>')
    error = f"<p>Error: <code>{_e(record.get('error'))}</code></p>" if record.get("error") else ""
    stamp = (
        f'<time datetime="{_rfc3339(when)}">{_abs_utc(when, now)}</time> '
        f"({_ago((now - when).total_seconds())} ago)"
        if when
        else "unknown time"
    )
    return (
        f'<article class="m"><h3>{stamp}: <span class="{_css(verdict)} chip">'
        f'<span aria-hidden="true">{_look(verdict).mark}</span> '
        f"{_e(verdict_label(verdict))}</span></h3>"
        f'<p class="reason">{_e(record.get("reason"))}</p>{error}'
        f'<div class="scroll"><table class="stages"><caption>Stage by stage</caption><thead><tr>'
        f'<th scope="col">stage</th>{heads}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></div></article>"
    )


def render_target_page(
    status: Mapping[str, Any],
    changes: Sequence[ChangeRow],
    measurements: Sequence[Mapping[str, Any]],
    *,
    service: str,
    target: str,
    vantage: str,
    now: datetime,
    hours: float = _DEFAULT_HOURS,
    static_v: str = "1",
) -> str:
    """The evidence for one (target, vantage): its verdict, its history, its last measurements."""
    now = now.astimezone(UTC)
    board = _board(status)
    current = [c for c in board.cells.get((service, vantage), []) if c.target == target]
    mine = [r for r in changes if (r.service, r.target, r.vantage) == (service, target, vantage)]
    tl = _timelines(mine, now - timedelta(hours=hours), now)
    recent = sorted(measurements, key=lambda r: _text(r.get("time")), reverse=True)
    if current:
        c = current[0]
        look = _look(c.verdict)
        head = (
            f'<p class="now"><span class="{_css(c.verdict)} chip big">'
            f'<span aria-hidden="true">{look.mark}</span> {_e(look.label)}</span> '
            f"{_time_tags(c.since, now)}</p>"
            f'<p class="reason">{_e(c.reason)}</p>'
        )
    else:
        head = "<p>No current verdict for this target at this vantage.</p>"
    history = "".join(_change_li(r, now) for r in sorted(mine, key=lambda r: r.since, reverse=True))
    evidence = "".join(_measurement_html(r, now, vantage) for r in recent[:_DRILL_MEASUREMENTS])
    band = _band_svg(tl.by_target.get((service, target, vantage), []), tl.start, tl.end, vantage)
    return (
        _head(f"{service} at {vantage} — lifeline", refresh_s=30, static_v=static_v)
        + '<body class="drill"><header><p><a href="/#'
        + _e(quote("s-" + service, safe=""))
        + '">← all services</a></p>'
        f'<h1><span class="sname">{_e(service)}</span> at '
        f'<span class="vname">{_e(vantage)}</span></h1>'
        f'<p class="tname"><code>{_e(target)}</code></p></header><main>{head}'
        f'<section aria-labelledby="h-tl"><h2 id="h-tl">Last {_e(_ago(hours * 3600))}</h2>'
        f'<div class="tl-row"><span class="tl-v">{_e(vantage)}</span>{band}</div>'
        f"{_axis(tl.start, tl.end, now)}</section>"
        '<section aria-labelledby="h-hist"><h2 id="h-hist">Verdict history</h2>'
        '<ol class="changes">'
        f"{history or '<li>None in this window.</li>'}</ol></section>"
        f'<section aria-labelledby="h-ev"><h2 id="h-ev">Last measurements</h2>'
        f"{evidence or '<p>No measurements stored.</p>'}</section>"
        + _legend()
        + "</main></body></html>\n"
    )


# --- HTTP -----------------------------------------------------------------------------------


def _hours(request: web.Request) -> float:
    raw = request.query.get("hours")
    if raw is None:
        return _DEFAULT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="hours: not a number\n") from None
    if not (0 < hours <= _MAX_HOURS):
        raise web.HTTPBadRequest(text=f"hours: must be in (0, {_MAX_HOURS:g}]\n")
    return hours


def _since_arg(now: datetime, hours: float) -> str:
    return _rfc3339(now - timedelta(hours=hours))


class _Static:
    """page.js and page.css, read once from the package; versioned by content hash."""

    def __init__(self) -> None:
        folder = resources.files("exporter") / "static"
        self.files = {name: (folder / name).read_bytes() for name in _STATIC_TYPES}
        digest = hashlib.sha256(b"".join(self.files[n] for n in sorted(self.files)))
        self.version = digest.hexdigest()[:12]


class _Handlers:
    def __init__(self, source: PageSource, *, poll_s: float) -> None:
        self.source = source
        self.poll_s = poll_s
        self.static_files = _Static()

    def _html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def index(self, request: web.Request) -> web.Response:
        hours = _hours(request)
        now = datetime.now(UTC)
        status = await self.source.status()
        changes = await self.source.changes(since=_since_arg(now, hours))
        page = render_page(
            status,
            changes,
            now=now,
            hours=hours,
            poll_s=self.poll_s,
            only_problems=request.query.get("only") == "problems",
            static_v=self.static_files.version,
            window=await self.source.window(),
        )
        return self._html(page)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_TYPES:
            raise web.HTTPNotFound()
        etag = f'"{self.static_files.version}"'
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=self.static_files.files[name],
            content_type=_STATIC_TYPES[name],
            charset="utf-8",
            headers=headers,
        )

    async def target(self, request: web.Request) -> web.Response:
        q = request.query
        service, target, vantage = q.get("service"), q.get("target"), q.get("vantage")
        if not service or not target or not vantage:
            raise web.HTTPBadRequest(text="service, target and vantage are required\n")
        hours = _hours(request)
        now = datetime.now(UTC)
        status = await self.source.status()
        known = any(
            isinstance(r, Mapping)
            and (r.get("service"), r.get("target"), r.get("vantage")) == (service, target, vantage)
            for r in status.get("results") or []
        )
        changes = await self.source.changes(since=_since_arg(now, hours))
        records = await self.source.measurements(
            service=service, target=target, vantage=vantage, limit=_DRILL_MEASUREMENTS
        )
        page = render_target_page(
            status,
            changes,
            records,
            service=service,
            target=target,
            vantage=vantage,
            now=now,
            hours=hours,
            static_v=self.static_files.version,
        )
        return self._html(page, status=200 if known or records else 404)

    async def timeline(self, request: web.Request) -> web.Response:
        hours = _hours(request)
        now = datetime.now(UTC)
        changes = await self.source.changes(since=_since_arg(now, hours))
        doc = timeline(changes, now=now, hours=hours, service=request.query.get("service") or None)
        return web.Response(
            text=json.dumps(doc, separators=(",", ":")),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def summary(self, request: web.Request) -> web.Response:
        status = await self.source.status()
        return web.Response(
            text=summary_text(status, now=datetime.now(UTC)),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )


def add_page_routes(
    app: web.Application, source: PageSource, *, poll_s: float = _DEFAULT_POLL_S
) -> None:
    """Register the status page, its static files, the drill-down, the timeline and the summary.

    ``poll_s`` is how often the open page asks ``/api/v1/status`` for news.
    """
    h = _Handlers(source, poll_s=poll_s)
    app.router.add_get("/", h.index)
    app.router.add_get("/static/{name}", h.static)
    app.router.add_get("/target", h.target)
    app.router.add_get("/api/v1/timeline", h.timeline)
    app.router.add_get("/api/v1/summary.txt", h.summary)

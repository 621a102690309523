"""The status page's HTML: view records for the templates, and the Jinja2 environment.

Every template is rendered with autoescaping on and ``StrictUndefined``: a value
shown on the page (a title, a reason, a URL, even a name) may come from a
censor's block page or an odd config, and the engine escapes all of them, so no
template has to remember to. The records below hold plain text; the only markup
is in ``templates/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension

from exporter.incidents import Incident
from exporter.page.now import headline, now_incidents, now_lines
from exporter.page.source import ChangeRow
from exporter.page.timeline import Band, Timelines, timelines
from exporter.page.view import (
    DEFAULT_HOURS,
    DEFAULT_POLL_S,
    LOOKS,
    RECENT_CHANGES,
    TREND_WINDOW,
    Board,
    Cell,
    Status,
    VantageInfo,
    abs_utc,
    ago,
    as_status,
    build_board,
    count_verdicts,
    css,
    is_problem,
    look,
    parse_time,
    problems_at,
    rfc3339,
    utc_offset,
    verdict_label,
    worst,
    zone,
)
from probes.records import Verdict

__all__ = ["render", "render_page"]


class _Compact(Extension):
    """Templates are indented for reading; the page is not: each source line is trimmed and
    the lines joined with nothing between them (a space that matters is written mid-line)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return "".join(line.strip() for line in source.splitlines())


_ENV = Environment(
    loader=PackageLoader("exporter.page", "templates"),
    autoescape=True,  # every template, whatever its name: no value is trusted
    undefined=StrictUndefined,
    extensions=[_Compact],
)


def render(template: str, **context: Any) -> str:
    """One template of ``templates/`` rendered with ``context`` (autoescaped), as a document."""
    return _ENV.get_template(template).render(**context) + "\n"


# --- records the templates read ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Since:
    """An instant as the page shows it: relative (``1h20m``) and absolute (``00:10 UTC``)."""

    iso: str
    ago: str
    abs: str


def since_of(dt: datetime | None, now: datetime) -> Since | None:
    if dt is None:
        return None
    return Since(rfc3339(dt), ago((now - dt).total_seconds()), abs_utc(dt, now))


def drill_href(service: str, target: str, vantage: str) -> str:
    return "/target?" + urlencode({"service": service, "target": target, "vantage": vantage})


@dataclass(frozen=True, slots=True)
class CellView:
    """One matrix cell (or the drill-down's headline): a verdict, or "not measured"."""

    service: str
    vantage: str
    target: str | None  # set on per-target rows (``data-t``)
    measured: bool = False
    verdict: str = ""
    css: str = "v-none"
    since_text: str = ""
    href: str = ""
    title: str = ""
    mark: str = ""
    label: str = ""
    count: str = ""  # "2/3" when only some targets have the worst verdict
    reason: str = ""
    since: Since | None = None


def cell_view(cells: Sequence[Cell], now: datetime, *, per_target: bool) -> CellView:
    """The worst verdict of ``cells`` in words, glyph and colour, with a link to its evidence."""
    w = worst(cells)
    k = look(w.verdict)
    n = sum(1 for c in cells if c.verdict == w.verdict)
    return CellView(
        service=w.service,
        vantage=w.vantage,
        target=w.target if per_target else None,
        measured=True,
        verdict=w.verdict,
        css=css(w.verdict),
        since_text=w.since_text,
        href=drill_href(w.service, w.target, w.vantage),
        title=f"{w.target}: {w.reason}",
        mark=k.mark,
        label=k.label,
        count=f"{n}/{len(cells)}" if not per_target and n < len(cells) else "",
        reason=w.reason,
        since=since_of(w.since, now),
    )


@dataclass(frozen=True, slots=True)
class VantageHead:
    """A column head: name, control mark, down mark, country, the vantage's local time."""

    name: str
    control: bool
    down: bool
    country: str
    tz: str
    local_iso: str = ""  # empty when the zone is unknown
    local_hm: str = ""
    offset: str = ""


def vantage_head(v: VantageInfo, now: datetime) -> VantageHead:
    head = VantageHead(v.name, v.control, v.up is False, v.country or "", v.timezone or "")
    tz = zone(v.timezone)
    if tz is None:
        return head
    local = now.astimezone(tz)
    return VantageHead(
        head.name,
        head.control,
        head.down,
        head.country,
        head.tz,
        local.isoformat(),
        local.strftime("%H:%M"),
        utc_offset(local),
    )


@dataclass(frozen=True, slots=True)
class TargetRow:
    name: str
    cells: list[CellView]


@dataclass(frozen=True, slots=True)
class ServiceRows:
    """One service's tbody: its summary row, then a row per target when it has several."""

    name: str
    sid: str
    fragment: str  # the sid as a URL fragment
    targets: list[str]
    cells: list[CellView]
    target_rows: list[TargetRow]


def service_rows(board: Board, service: str, now: datetime) -> ServiceRows:
    targets = board.targets.get(service, [])
    sid = "s-" + service
    cells = []
    for v in board.vantages:
        mine = board.cells.get((service, v.name))
        cells.append(
            cell_view(mine, now, per_target=False) if mine else CellView(service, v.name, None)
        )
    rows = []
    if len(targets) > 1:
        for t in targets:
            row = []
            for v in board.vantages:
                own = [c for c in board.cells.get((service, v.name), []) if c.target == t]
                row.append(
                    cell_view(own, now, per_target=True) if own else CellView(service, v.name, t)
                )
            rows.append(TargetRow(t, row))
    return ServiceRows(service, sid, quote(sid, safe=""), targets, cells, rows)


@dataclass(frozen=True, slots=True)
class Chip:
    css: str
    label: str
    n: int


@dataclass(frozen=True, slots=True)
class Overview:
    problems: int
    total: int
    chips: list[Chip]
    trend: str
    trend_class: str
    recent: int  # verdict changes in the last hour


def overview(board: Board, changes: Sequence[ChangeRow], now: datetime) -> Overview:
    """Headline counts and the trend against an hour ago: is it getting worse?"""
    counts = count_verdicts(board)
    chips = [
        Chip(css(v), verdict_label(v), n)
        for v, n in sorted(counts.by_verdict.items(), key=lambda kv: (-look(kv[0]).rank, kv[0]))
    ]
    before, known = problems_at(changes, now - TREND_WINDOW)
    recent = sum(
        1
        for r in changes
        if r.previous is not None and (s := parse_time(r.since)) and s > now - TREND_WINDOW
    )
    p = counts.problems
    if not known:
        trend, cls = f"{p} not ok now; no verdicts on record from an hour ago.", "same"
    elif p > before:
        trend, cls = f"Getting worse: {p} not ok now, {before} an hour ago.", "worse"
    elif p < before:
        trend, cls = f"Improving: {p} not ok now, {before} an hour ago.", "better"
    else:
        trend, cls = f"Unchanged: {p} not ok now and an hour ago.", "same"
    return Overview(p, counts.total, chips, trend, cls, recent)


@dataclass(frozen=True, slots=True)
class ChangeView:
    """One verdict period in a list of changes."""

    service: str
    vantage: str
    target: str
    previous: str  # the verdict it replaced, in words ("" for none)
    css: str
    label: str
    href: str
    since: Since | None
    until: Since | None  # set (with ``duration``) for a period that has ended
    duration: str


def change_view(row: ChangeRow, now: datetime) -> ChangeView:
    since, until = parse_time(row.since), parse_time(row.until)
    ended = since is not None and until is not None
    return ChangeView(
        service=row.service,
        vantage=row.vantage,
        target=row.target,
        previous=verdict_label(row.previous) if row.previous else "",
        css=css(row.verdict),
        label=verdict_label(row.verdict),
        href=drill_href(row.service, row.target, row.vantage),
        since=since_of(since, now),
        until=since_of(until, now) if ended else None,
        duration=ago((until - since).total_seconds()) if since and until else "",
    )


_TL_W = 1000  # SVG user units across the window; bands stretch to the element's width
# A band that is not ok is drawn at least this wide (1.5 % of the row), so a fresh incident
# is a visible block at any window, not a sliver; its tip and words keep the true times.
# page.js draws with the same rule.
MIN_PROBLEM_W = 15.0


@dataclass(frozen=True, slots=True)
class Rect:
    css: str
    x: str
    width: str
    tip: str


@dataclass(frozen=True, slots=True)
class BandRow:
    """One row of bands as SVG rects; ``aria`` says them in words, ``problems`` says the
    bands that are not ok in visible words (colour is never the only signal)."""

    rects: list[Rect]
    aria: str
    problems: str = ""


def band_row(bands: Sequence[Band], start: datetime, end: datetime, label: str) -> BandRow:
    span = (end - start).total_seconds() or 1.0
    rects: list[tuple[bool, Rect]] = []
    words = []
    bad = []
    for b in bands:
        x = (b.start - start).total_seconds() / span * _TL_W
        w = (b.end - b.start).total_seconds() / span * _TL_W
        problem = is_problem(b.verdict)
        w = max(w, MIN_PROBLEM_W if problem else 0.5)
        x = max(0.0, min(x, _TL_W - w))  # a widened band at the end grows to the left
        tip = f"{verdict_label(b.verdict)} {rfc3339(b.start)} to {rfc3339(b.end)}"
        rects.append((problem, Rect(css(b.verdict), f"{x:.2f}", f"{w:.2f}", tip)))
        word = f"{verdict_label(b.verdict)} from {b.start.strftime('%H:%M')}"
        words.append(word)
        if problem:
            bad.append(word)
    rects.sort(key=lambda pr: pr[0])  # problems last: drawn over the ok they may overlap
    return BandRow(
        [r for _, r in rects],
        f"{label}: " + ("; ".join(words) if words else "no data"),
        "; ".join(bad),
    )


@dataclass(frozen=True, slots=True)
class Axis:
    start: str
    mid: str
    end: str


def axis(start: datetime, end: datetime, now: datetime) -> Axis:
    return Axis(abs_utc(start, now), abs_utc(start + (end - start) / 2, now), abs_utc(end, now))


@dataclass(frozen=True, slots=True)
class ServiceTimeline:
    name: str
    rows: list[tuple[str, BandRow]]  # (vantage, its bands)


def service_timeline(
    service: str, vantages: Sequence[VantageInfo], tl: Timelines
) -> ServiceTimeline:
    return ServiceTimeline(
        service,
        [
            (v.name, band_row(tl.by_cell.get((service, v.name), []), tl.start, tl.end, v.name))
            for v in vantages
        ],
    )


_WINDOW_LINKS = ((1, "1 h"), (6, "6 h"), (24, "24 h"), (168, "7 d"))


def page_href(*, hours: float, only_problems: bool) -> str:
    """The page's own URL with these choices (the default window is left out)."""
    q: dict[str, str] = {}
    if hours != DEFAULT_HOURS:
        q["hours"] = f"{hours:g}"
    if only_problems:
        q["only"] = "problems"
    return "/?" + urlencode(q) if q else "/"


@dataclass(frozen=True, slots=True)
class LegendItem:
    verdict: str
    css: str
    label: str
    mark: str
    rank: int
    meaning: str


def legend() -> list[LegendItem]:
    """The verdict table, shown as the legend; page.js reads labels, glyphs and ranks from it."""
    return [
        LegendItem(v, css(v), k.label, k.mark, k.rank, k.meaning)
        for v, k in sorted(LOOKS.items(), key=lambda kv: -kv[1].rank)
    ]


@dataclass(frozen=True, slots=True)
class Folded:
    """A vantage that is down (every service there ``vantage_down``), said once by
    ``?only=problems`` instead of a ``vantage_down`` cell in every row."""

    name: str
    country: str
    services: int
    targets: int
    since: Since | None


def folded_vantages(board: Board, incidents: Sequence[Incident], now: datetime) -> list[Folded]:
    """The vantages where every current verdict is ``vantage_down``, with their shutdown."""
    out = []
    for v in board.vantages:
        mine = [c for (_, vn), cs in board.cells.items() if vn == v.name for c in cs]
        if not mine or any(c.verdict != Verdict.VANTAGE_DOWN for c in mine):
            continue
        inc = next(
            (i for i in incidents if i.verdict == Verdict.VANTAGE_DOWN and i.vantage == v.name),
            None,
        )
        start = (
            datetime.fromtimestamp(inc.start, UTC)
            if inc
            else min((c.since for c in mine if c.since), default=None)
        )
        services = len(inc.services) if inc else len({c.service for c in mine})
        out.append(Folded(v.name, v.country or "", services, len(mine), since_of(start, now)))
    return out


def _window_lines(window: Mapping[str, Any] | None) -> list[str]:
    """The best maintenance window's explanation (`lifeline window`), or none."""
    windows = (window or {}).get("windows") or []
    if not windows or not isinstance(windows[0], Mapping):
        return []
    return [str(line) for line in (windows[0].get("explanation") or [])[:6]]


def render_page(
    status: Status | Mapping[str, Any],
    changes: Sequence[ChangeRow],
    *,
    now: datetime,
    hours: float = DEFAULT_HOURS,
    poll_s: float = DEFAULT_POLL_S,
    only_problems: bool = False,
    static_v: str = "1",
    window: Mapping[str, Any] | None = None,
) -> str:
    """The whole status page as HTML: a pure function of the status and the timeline.

    ``changes`` are the verdict periods overlapping the last ``hours``; ``now``
    fixes "since" and local times so the output is reproducible.
    """
    now = now.astimezone(UTC)
    typed = as_status(status)
    board = build_board(typed)
    incidents = now_incidents(typed, changes)
    folded: list[Folded] = []
    if only_problems:
        folded = folded_vantages(board, incidents, now)
        gone = {f.name for f in folded}
        board = Board(
            board.time,
            board.services,
            [v for v in board.vantages if v.name not in gone],
            board.targets,
            {k: cs for k, cs in board.cells.items() if k[1] not in gone},
        )
    services = board.services
    if only_problems:
        services = [
            s
            for s in services
            if any(
                is_problem(c.verdict)
                for v in board.vantages
                for c in board.cells.get((s, v.name), [])
            )
        ]
    tl = timelines(changes, now - timedelta(hours=hours), now)
    head = overview(build_board(typed), changes, now)
    real = [r for r in changes if r.previous is not None]  # a first verdict is not a change
    real.sort(key=lambda r: parse_time(r.since) or now, reverse=True)
    updated = board.time or now
    return render(
        "page.html",
        # the tab counts what the headline counts: the ongoing incidents
        title=f"({len(incidents)}) lifeline status" if incidents else "lifeline status",
        refresh_s=max(10, int(poll_s * 3)),
        static_v=static_v,
        poll_ms=int(poll_s * 1000),
        hours=f"{hours:g}",
        hours_text=ago(hours * 3600),
        updated_iso=rfc3339(updated),
        updated_text=updated.strftime("%Y-%m-%d %H:%M:%S UTC"),
        only_problems=only_problems,
        notice=(
            "The first round of measurements is still running: cells fill in as results arrive."
            if typed.ready is False
            else ""
        ),
        overview=head,
        headline=headline(incidents, measured=bool(typed.cells)),
        now_lines=now_lines(typed, incidents, now),
        folded=folded,
        all_href=page_href(hours=hours, only_problems=False),
        problems_href=page_href(hours=hours, only_problems=True),
        heads=[vantage_head(v, now) for v in board.vantages],
        columns=len(board.vantages) + 1,
        measured=bool(board.services),
        services=[service_rows(board, s, now) for s in services],
        changes=[change_view(r, now) for r in real[:RECENT_CHANGES]],
        window=_window_lines(window),
        links=[
            (page_href(hours=h, only_problems=only_problems), label, h == hours)
            for h, label in _WINDOW_LINKS
        ],
        axis=axis(tl.start, tl.end, now),
        timelines=[service_timeline(s, board.vantages, tl) for s in services],
        legend=legend(),
    )

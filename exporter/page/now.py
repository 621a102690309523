"""The page's "Now" section: one line per ongoing incident, worst first (``_now.html``).

The incidents are :mod:`exporter.incidents`' (one per (service, vantage, method), one per
down vantage, one per outage), built from what the page already has: the current verdicts
(what is going on now, exactly as the matrix shows it) and the timeline's ended periods
(so an incident whose first target recovered still begins when it began).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from exporter.incidents import Incident, Period, build_incidents, rank
from exporter.page.view import (
    ChangeRow,
    Status,
    VantageInfo,
    abs_utc,
    ago,
    css,
    look,
    rfc3339,
    zone,
)
from probes.records import Verdict

__all__ = ["Headline", "NowLine", "Part", "headline", "now_incidents", "now_lines"]


@dataclass(frozen=True, slots=True)
class NowLine:
    """One ongoing incident in words: how, what, where (country, local time), since when."""

    verdict: str
    css: str
    mark: str
    label: str  # the method in words: "DNS blocked", "Vantage down"
    what: str  # the service, or the services a down vantage holds
    where: str  # the vantage, or the vantages an outage is seen at
    place: str  # "IR, 14:30 local time (Asia/Tehran)"; "" when the config does not say
    targets: str  # "2 targets"
    since_iso: str
    since_abs: str  # "00:10 UTC"
    duration: str  # "1h20m"


def now_incidents(status: Status, changes: Sequence[ChangeRow]) -> list[Incident]:
    """The ongoing incidents of ``status`` (with ``changes`` for when they began), worst first."""
    periods: list[Period] = [
        Period(c.service, c.target, c.vantage, c.verdict, c.since, c.until, c.reason)
        for c in changes
        if c.until is not None
    ]
    for cell in status.cells:
        since = cell.since_text or (rfc3339(cell.since) if cell.since else "")
        if since:
            periods.append(
                Period(cell.service, cell.target, cell.vantage, cell.verdict, since, None,
                       cell.reason)
            )  # fmt: skip
    return [i for i in build_incidents(periods) if i.ongoing]


def now_lines(status: Status, incidents: Sequence[Incident], now: datetime) -> list[NowLine]:
    """``incidents`` (from :func:`now_incidents`) in words, one line each, in their order."""
    info = {v.name: v for v in status.vantages}
    stamp = now.timestamp()
    return [_line(i, info, now, stamp) for i in incidents]


# --- the headline: the incidents rolled up ---------------------------------------------

# how the headline counts an incident of each verdict: (one, many)
_NOUNS: dict[str, tuple[str, str]] = {
    Verdict.VANTAGE_DOWN: ("shutdown", "shutdowns"),
    Verdict.THROTTLED: ("throttled", "throttled"),
    Verdict.ANOMALY: ("anomaly", "anomalies"),
    Verdict.UNREACHABLE: ("unreachable", "unreachable"),
    Verdict.SERVICE_DOWN: ("outage", "outages"),
    Verdict.ERROR: ("measurement error", "measurement errors"),
}
# the blocking methods, counted together as "blocked" and named inside it
_BLOCKED: dict[str, str] = {
    Verdict.DNS_BLOCKED: "DNS",
    Verdict.TCP_BLOCKED: "TCP",
    Verdict.TLS_BLOCKED: "TLS",
    Verdict.HTTP_BLOCKED: "HTTP",
}


@dataclass(frozen=True, slots=True)
class Part:
    """One count of the headline: "1 shutdown", or "3 blocked" with its methods inside."""

    text: str
    css: str  # the verdict's colour ("" for the blocked total: its methods carry theirs)
    verdict: str
    inner: tuple[Part, ...] = ()  # per method, for "blocked"


@dataclass(frozen=True, slots=True)
class Headline:
    """The first line of the page: the ongoing incidents counted by kind, worst first."""

    parts: tuple[Part, ...]
    quiet: str  # what to say when there is no part: "All reachable", "No results yet"

    @property
    def text(self) -> str:
        if not self.parts:
            return self.quiet
        out = []
        for p in self.parts:
            inner = ", ".join(q.text for q in p.inner)
            out.append(f"{p.text} ({inner})" if inner else p.text)
        return ", ".join(out)


def headline(incidents: Sequence[Incident], *, measured: bool) -> Headline:
    """``incidents`` counted as a responder says them, in the order of :data:`RANK`:
    "1 shutdown, 3 blocked (2 DNS, 1 TLS), 2 outages"; "All reachable" when there are none
    (``measured``: any current verdict at all; "No results yet" when there is none)."""
    by: dict[str, int] = {}
    for i in incidents:
        by[i.verdict] = by.get(i.verdict, 0) + 1
    parts: list[Part] = []
    blocked = [(v, by[v]) for v in sorted(by, key=rank) if v in _BLOCKED]
    done = False
    for v in sorted(by, key=lambda v: (rank(v), v)):
        if v in _BLOCKED:
            if not done:
                inner = tuple(Part(f"{n} {_BLOCKED[m]}", css(m), m) for m, n in blocked)
                parts.append(Part(f"{sum(n for _, n in blocked)} blocked", "", "blocked", inner))
                done = True
            continue
        n = by[v]
        one, many = _NOUNS.get(v, (v, v))
        parts.append(Part(f"{n} {one if n == 1 else many}", css(v), v))
    return Headline(tuple(parts), "All reachable" if measured else "No results yet")


def _place(vantage: str | None, info: dict[str, VantageInfo], now: datetime) -> str:
    v = info.get(vantage or "")
    if v is None:
        return ""
    country, tz_name = v.country or "", v.timezone or ""
    tz = zone(tz_name)
    local = f"{now.astimezone(tz).strftime('%H:%M')} local time ({tz_name})" if tz else ""
    return ", ".join(part for part in (country, local) if part)


def _line(i: Incident, info: dict[str, VantageInfo], now: datetime, stamp: float) -> NowLine:
    k = look(i.verdict)
    if i.service is None:  # a down vantage: the services it holds
        what = i.services[0] if len(i.services) == 1 else f"{len(i.services)} services"
    else:
        what = i.service
    where = i.vantage if i.vantage is not None else "every vantage (" + ", ".join(i.vantages) + ")"
    n = len(i.targets)
    return NowLine(
        verdict=i.verdict,
        css=css(i.verdict),
        mark=k.mark,
        label=k.label,
        what=what,
        where=where,
        place=_place(i.vantage, info, now) if i.vantage is not None else "",
        targets=f"{n} target{'s' if n != 1 else ''}",
        since_iso=i.since,
        since_abs=abs_utc(datetime.fromtimestamp(i.start, now.tzinfo), now),
        duration=ago(i.duration_s(stamp)),
    )

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

from exporter.incidents import Incident, Period, build_incidents
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

__all__ = ["NowLine", "now_lines"]


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


def now_lines(status: Status, changes: Sequence[ChangeRow], now: datetime) -> list[NowLine]:
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
    info = {v.name: v for v in status.vantages}
    stamp = now.timestamp()
    return [_line(i, info, now, stamp) for i in build_incidents(periods) if i.ongoing]


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

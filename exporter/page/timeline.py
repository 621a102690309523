"""Verdict bands over time: the page's timelines and the ``/api/v1/timeline`` document."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.page.source import ChangeRow
from exporter.page.view import look, parse_time, rfc3339

__all__ = ["TIMELINE_SCHEMA", "Band", "Timelines", "timeline", "timelines"]

TIMELINE_SCHEMA = "lifeline.timeline/1"


@dataclass(frozen=True, slots=True)
class Band:
    verdict: str
    start: datetime
    end: datetime


def _periods(rows: Iterable[ChangeRow], start: datetime, end: datetime) -> list[Band]:
    """The rows of one (service, target, vantage), clipped to [start, end], in time order."""
    out: list[Band] = []
    for row in rows:
        s = parse_time(row.since)
        if s is None:
            continue
        e = parse_time(row.until) if row.until else end
        if e is None:
            continue
        s, e = max(s, start), min(e, end)
        if e > s:
            out.append(Band(row.verdict, s, e))
    out.sort(key=lambda b: b.start)
    return out


def _at(bands: Sequence[Band], starts: Sequence[datetime], t: datetime) -> str | None:
    """The verdict of the band covering instant t, or None (no data)."""
    i = bisect.bisect_right(starts, t) - 1
    if i >= 0 and bands[i].start <= t < bands[i].end:
        return bands[i].verdict
    return None


def _merge_worst(per_target: Sequence[Sequence[Band]]) -> list[Band]:
    """Worst-of-targets bands: at every instant the worst verdict any target had."""
    if len(per_target) == 1:
        return _join(list(per_target[0]))
    cuts = sorted({t for bands in per_target for b in bands for t in (b.start, b.end)})
    indexed = [(bands, [b.start for b in bands]) for bands in per_target]
    out: list[Band] = []
    for a, b in itertools.pairwise(cuts):
        mid = a + (b - a) / 2
        present = [v for bands, starts in indexed if (v := _at(bands, starts, mid)) is not None]
        if present:
            out.append(Band(max(present, key=lambda v: look(v).rank), a, b))
    return _join(out)


def _join(bands: list[Band]) -> list[Band]:
    """Adjacent bands of the same verdict become one."""
    out: list[Band] = []
    for b in bands:
        if out and out[-1].verdict == b.verdict and out[-1].end >= b.start:
            out[-1] = Band(b.verdict, out[-1].start, max(out[-1].end, b.end))
        else:
            out.append(b)
    return out


@dataclass(slots=True)
class Timelines:
    """Worst-of-targets bands per (service, vantage) and per (service, target, vantage)."""

    start: datetime
    end: datetime
    by_cell: dict[tuple[str, str], list[Band]] = field(default_factory=dict)
    by_target: dict[tuple[str, str, str], list[Band]] = field(default_factory=dict)


def timelines(changes: Iterable[ChangeRow], start: datetime, end: datetime) -> Timelines:
    grouped: dict[tuple[str, str, str], list[ChangeRow]] = {}
    for row in changes:
        grouped.setdefault((row.service, row.target, row.vantage), []).append(row)
    tl = Timelines(start, end)
    per_cell: dict[tuple[str, str], list[list[Band]]] = {}
    for key, rows in grouped.items():
        bands = _periods(rows, start, end)
        tl.by_target[key] = _join(bands)
        per_cell.setdefault((key[0], key[2]), []).append(bands)
    for cell, lists in per_cell.items():
        tl.by_cell[cell] = _merge_worst(lists)
    return tl


def _bands_json(bands: Sequence[Band]) -> list[dict[str, str]]:
    return [{"verdict": b.verdict, "start": rfc3339(b.start), "end": rfc3339(b.end)} for b in bands]


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
    tl = timelines(rows, start, end)
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
        "start": rfc3339(start),
        "end": rfc3339(end),
        "services": list(services.values()),
    }

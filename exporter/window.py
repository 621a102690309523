"""The core of ``lifeline window``: when is maintenance least harmful?

In June 2009 Twitter's host moved a critical upgrade from midday in Iran to
1:30 at night there, because Twitter had become a lifeline for people in the
protests. This module makes that judgement repeatable: it ranks candidate
maintenance windows by the harm they would do to the regions lifeline watches.

Everything here is a pure function of plain data and a clock passed in: no
I/O, no ``datetime.now()``. The CLI and the HTTP endpoint feed it the current
results, the verdict-change events and the configured vantages.

The harm formula (also in ``docs/window.md``)::

    harm(window)        = sum over regions r of harm_r
    harm_r              = weighted_hours_r * dependence_r
    weighted_hours_r    = integral over the window of activity[local hour of r] dt  (in hours)
    dependence_r        = BASE_DEPENDENCE
                          + BLOCKING_WEIGHT * blocked_r / total_r         (0 when total_r == 0)
                          + SHUTDOWN_WEIGHT  if a shutdown now or within the lookback
                          + CHANGES_WEIGHT * min(recent_changes_r, CHANGES_SATURATION)
                                           / CHANGES_SATURATION

``activity`` is a daily curve of 24 weights, index = local hour (0..23). The
integral is exact: the window is cut wherever the region's local hour or its
UTC offset changes, so windows that cross local midnight or a daylight-saving
change get the hours people actually live through. The hour weight shown in
explanations is ``weighted_hours_r / window hours``, the duration-weighted mean.

Why dependence grows with blocking, shutdowns and churn: where other channels
are blocked, the ones still open (the service under maintenance among them)
carry the people who need them; a recent shutdown or fresh verdict changes
mean the situation is moving and people are looking for news right now.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from probes.model import CANARY_SERVICE, Vantage
from probes.records import Verdict
from probes.timefmt import rfc3339

__all__ = [
    "BASE_DEPENDENCE",
    "BLOCKING_VERDICTS",
    "BLOCKING_WEIGHT",
    "CHANGES_SATURATION",
    "CHANGES_WEIGHT",
    "DEFAULT_ACTIVITY",
    "SCHEMA",
    "SHUTDOWN_WEIGHT",
    "ChangeRow",
    "CurrentRow",
    "RegionHarm",
    "RegionState",
    "WindowScore",
    "dependence_factor",
    "parse_when",
    "rank_windows",
    "region_states",
    "render_table",
    "score_window",
    "to_json",
]

#: Version of the JSON document of ``lifeline window --format json``.
SCHEMA = "lifeline.window/1"

#: How active people are, by local hour (index 0 = 00:00-01:00 local time).
#: A rough shape of a day online: lowest in the small hours, rising through
#: the morning, highest in the evening. Override with ``window.activity`` in
#: the config (``Config.window_activity``): 24 non-negative numbers.
DEFAULT_ACTIVITY: tuple[float, ...] = (
    0.35, 0.18, 0.12, 0.08, 0.08, 0.12,  # 00-05: night
    0.25, 0.45, 0.65, 0.80, 0.90, 0.95,  # 06-11: morning
    0.95, 0.95, 0.95, 0.95, 0.95, 1.00,  # 12-17: afternoon
    1.00, 1.00, 1.00, 0.95, 0.85, 0.60,  # 18-23: evening
)  # fmt: skip

#: Dependence of a region with no trouble at all.
BASE_DEPENDENCE = 1.0
#: Added at full blocking (every measured target blocked), pro rata below.
BLOCKING_WEIGHT = 2.0
#: Added when the vantage was down (a shutdown) now or within the lookback.
SHUTDOWN_WEIGHT = 1.0
#: Added at CHANGES_SATURATION or more verdict changes within the lookback.
CHANGES_WEIGHT = 1.0
#: Verdict changes beyond this many add nothing more: churn is a signal, not a count.
CHANGES_SATURATION = 5

#: Verdicts that mean a channel is closed (or nearly) at a vantage.
BLOCKING_VERDICTS = frozenset(
    {
        Verdict.DNS_BLOCKED,
        Verdict.TCP_BLOCKED,
        Verdict.TLS_BLOCKED,
        Verdict.HTTP_BLOCKED,
        Verdict.THROTTLED,
    }
)

_HOURS_PER_DAY = 24
_HOUR = timedelta(hours=1)
_TINY = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Harms equal to this many decimals are a tie (broken by the earlier start).
_HARM_DIGITS = 9
#: Local hour at which each part of the day begins, for the explanation text.
_DAY_PARTS = ((0, "night"), (6, "morning"), (12, "afternoon"), (18, "evening"), (23, "night"))


@dataclass(frozen=True, slots=True)
class RegionState:
    """One watched region (a non-control vantage with a timezone) and its trouble now."""

    vantage: str
    timezone: str  # IANA name, resolved with zoneinfo
    country: str | None
    blocked: int  # targets currently *_blocked or throttled at this vantage
    total: int  # targets measured at this vantage (canaries not counted)
    shutdown_recent: bool  # vantage_down now or within the lookback
    recent_changes: int  # verdict changes within the lookback
    lookback: timedelta = timedelta(hours=24)  # what "recent" meant, for the text


@dataclass(frozen=True, slots=True)
class RegionHarm:
    """What one window does to one region, with the numbers that explain it."""

    vantage: str
    timezone: str
    country: str | None
    local_start: str  # ISO 8601 with the local UTC offset
    local_end: str
    local_span: str  # "01:30-02:30 Asia/Tehran", as people read it
    hour_weight: float  # duration-weighted mean of the activity curve over the window
    dependence: float
    hours: float  # window length
    harm: float  # hour_weight * hours * dependence
    reasons: tuple[str, ...]  # why dependence is what it is


@dataclass(frozen=True, slots=True)
class WindowScore:
    """One candidate window, its total harm and who it would hurt most (first)."""

    start: datetime  # UTC, aware
    end: datetime  # UTC, aware
    harm: float
    regions: tuple[RegionHarm, ...]  # most harmed first
    explanation: tuple[str, ...]
    activity: tuple[float, ...] = DEFAULT_ACTIVITY  # the curve it was scored with


# --- reading the current state ------------------------------------------------


class CurrentRow(Protocol):
    """A current verdict: the store's ``Latest`` row or the board's ``Entry``."""

    @property
    def service(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def time(self) -> str: ...  # RFC 3339: the latest measurement that carries it


class ChangeRow(Protocol):
    """A period of the timeline: the store's ``VerdictChange``."""

    @property
    def service(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def previous(self) -> str | None: ...  # None: the target's first verdict
    @property
    def since(self) -> str: ...
    @property
    def until(self) -> str | None: ...


def region_states(
    results: Sequence[CurrentRow],
    changes: Sequence[ChangeRow],
    vantages: Sequence[Vantage],
    *,
    now: datetime,
    lookback: timedelta = timedelta(hours=24),
) -> list[RegionState]:
    """The watched regions and their trouble at ``now``, in config order.

    A region is a non-control vantage with a timezone: the control stands for
    the uncensored world and a vantage without a timezone has no local hours.
    ``results`` are the current results (the latest per service, target and
    vantage is used); ``changes`` are verdict-change events. Canary results
    are not targets people use, so they count only as evidence of a shutdown.
    """
    _need_aware(now, "now")
    if lookback < timedelta(0):
        raise ValueError("lookback must not be negative")
    latest = _latest_results(results)
    regions = []
    for vantage in vantages:
        if vantage.control or not vantage.timezone:
            continue
        _zone(vantage.timezone, vantage.name)
        mine = [r for key, r in latest.items() if key[2] == vantage.name]
        targets = [r for r in mine if r.service != CANARY_SERVICE]
        events = [c for c in changes if c.vantage == vantage.name]
        regions.append(
            RegionState(
                vantage=vantage.name,
                timezone=vantage.timezone,
                country=vantage.country,
                blocked=sum(1 for r in targets if r.verdict in BLOCKING_VERDICTS),
                total=len(targets),
                shutdown_recent=any(r.verdict == Verdict.VANTAGE_DOWN for r in mine)
                or _shutdown_in(events, now, lookback),
                recent_changes=_changes_in(events, now, lookback),
                lookback=lookback,
            )
        )
    return regions


def _latest_results(
    results: Sequence[CurrentRow],
) -> dict[tuple[str, str, str], CurrentRow]:
    """The newest result per (service, target, vantage): older ones are not 'now'."""
    latest: dict[tuple[str, str, str], tuple[datetime, CurrentRow]] = {}
    for result in results:
        key = (result.service, result.target, result.vantage)
        when = _parse_time(result.time, "result time")
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, result)
    return {key: result for key, (_, result) in latest.items()}


def _shutdown_in(events: Sequence[ChangeRow], now: datetime, lookback: timedelta) -> bool:
    """True if a vantage_down period overlaps [now - lookback, now]."""
    for event in events:
        if event.verdict != Verdict.VANTAGE_DOWN:
            continue
        since = _parse_time(event.since, "change since")
        until = event.until
        ended = now if until is None else _parse_time(until, "change until")
        if since <= now and ended >= now - lookback:
            return True
    return False


def _changes_in(events: Sequence[ChangeRow], now: datetime, lookback: timedelta) -> int:
    """Verdict changes of real targets (not canaries) that began within the lookback.

    An event whose ``previous`` is None is a target's first verdict (the store
    records one when measuring starts): a first look, not a change.
    """
    count = 0
    for event in events:
        if event.service == CANARY_SERVICE:
            continue
        if event.previous is None:
            continue
        since = _parse_time(event.since, "change since")
        if now - lookback <= since <= now:
            count += 1
    return count


def dependence_factor(region: RegionState) -> float:
    """How much people in ``region`` depend on the channels still open to them.

    ``BASE_DEPENDENCE`` plus the share of blocked targets times
    ``BLOCKING_WEIGHT``, plus ``SHUTDOWN_WEIGHT`` after a recent shutdown,
    plus ``CHANGES_WEIGHT`` scaled by recent verdict changes (saturating at
    ``CHANGES_SATURATION``).
    """
    factor = BASE_DEPENDENCE
    if region.total > 0:
        factor += BLOCKING_WEIGHT * region.blocked / region.total
    if region.shutdown_recent:
        factor += SHUTDOWN_WEIGHT
    factor += CHANGES_WEIGHT * min(region.recent_changes, CHANGES_SATURATION) / CHANGES_SATURATION
    return factor


def _dependence_reasons(region: RegionState) -> tuple[str, ...]:
    """The facts behind :func:`dependence_factor`, as short phrases."""
    recent = f"in the last {_fmt_span(region.lookback)}"
    if region.total == 0:
        reasons = ["no targets measured"]
    else:
        reasons = [f"{region.blocked} of {region.total} targets blocked"]
    if region.shutdown_recent:
        reasons.append(f"shutdown {recent}")
    if region.recent_changes:
        plural = "s" if region.recent_changes != 1 else ""
        reasons.append(f"{region.recent_changes} verdict change{plural} {recent}")
    return tuple(reasons)


# --- scoring ----------------------------------------------------------------------


def score_window(
    regions: Sequence[RegionState],
    start: datetime,
    duration: timedelta,
    *,
    activity: Sequence[float] | None = None,
) -> WindowScore:
    """The harm of maintenance from ``start`` for ``duration``, region by region.

    Per region: harm = (integral of ``activity[local hour]`` over the window,
    in hours) x :func:`dependence_factor`. The total is the sum; the regions
    come back most harmed first, which is what ``--check`` shows.
    """
    _need_aware(start, "start")
    if duration <= timedelta(0):
        raise ValueError("the window duration must be positive")
    weights = _activity(activity)
    start = start.astimezone(UTC)
    end = start + duration
    harms = sorted(
        (_region_harm(region, start, end, weights) for region in regions),
        key=lambda h: (-h.harm, h.vantage),
    )
    total = math.fsum(h.harm for h in harms)
    return WindowScore(
        start=start,
        end=end,
        harm=total,
        regions=tuple(harms),
        explanation=_explain(start, end, total, harms),
        activity=weights,
    )


def _region_harm(
    region: RegionState, start: datetime, end: datetime, weights: tuple[float, ...]
) -> RegionHarm:
    zone = _zone(region.timezone, region.vantage)
    hours = (end - start) / _HOUR
    weighted = _weighted_hours(start, end, zone, weights)
    dependence = dependence_factor(region)
    return RegionHarm(
        vantage=region.vantage,
        timezone=region.timezone,
        country=region.country,
        local_start=start.astimezone(zone).isoformat(),
        local_end=end.astimezone(zone).isoformat(),
        local_span=_local_span(start, end, zone, region.timezone),
        hour_weight=weighted / hours,
        dependence=dependence,
        hours=hours,
        harm=weighted * dependence,
        reasons=_dependence_reasons(region),
    )


def _weighted_hours(
    start: datetime, end: datetime, zone: tzinfo, weights: tuple[float, ...]
) -> float:
    """Integral of the activity curve over [start, end) in ``zone``, in hours."""
    return math.fsum(
        weights[hour] * ((seg_end - seg_start) / _HOUR)
        for seg_start, seg_end, hour in _local_hour_segments(start, end, zone)
    )


def _local_hour_segments(
    start: datetime, end: datetime, zone: tzinfo
) -> Iterator[tuple[datetime, datetime, int]]:
    """Cut [start, end) (UTC) into pieces of one local hour and one UTC offset each.

    Arithmetic stays in UTC, so a piece's length is real elapsed time: the hour
    skipped when clocks go forward gets none, the hour repeated when they go
    back gets both of its passes.
    """
    cursor = start
    while cursor < end:
        local = cursor.astimezone(zone)
        into_hour = timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
        piece_end = _offset_change_before(cursor, min(end, cursor + _HOUR - into_hour), zone)
        yield cursor, piece_end, local.hour
        cursor = piece_end


def _offset_change_before(lo: datetime, hi: datetime, zone: tzinfo) -> datetime:
    """The first instant in (lo, hi) where the UTC offset differs from lo's, else hi.

    zoneinfo does not list transitions, so bisect on microseconds; this only
    runs for the one piece that contains a clock change.
    """
    offset = _offset(lo, zone)
    if _offset(hi - _TINY, zone) == offset:
        return hi
    low, high = lo, hi - _TINY  # offset(low) == offset, offset(high) != offset
    while high - low > _TINY:
        mid = low + (high - low) // 2
        if _offset(mid, zone) == offset:
            low = mid
        else:
            high = mid
    return high


def _offset(moment: datetime, zone: tzinfo) -> timedelta:
    return moment.astimezone(zone).utcoffset() or timedelta(0)


def _explain(
    start: datetime, end: datetime, total: float, harms: Sequence[RegionHarm]
) -> tuple[str, ...]:
    """One headline, then one line per region, most harmed first."""
    utc = _local_span(start, end, UTC, "UTC")
    if not harms:
        return (f"{start:%Y-%m-%d} {utc}: harm 0 (no watched regions)",)
    lines = [f"{start:%Y-%m-%d} {utc}: harm {total:.2f}, hurts {harms[0].vantage} most"]
    for h in harms:
        zone = _zone(h.timezone, h.vantage)
        part = _day_part(start + (end - start) / 2, zone)
        lines.append(
            f"{utc} = {h.local_span} ({part}, weight {h.hour_weight:.2f})"
            f" x crisis factor {h.dependence:.2f} ({', '.join(h.reasons)})"
            f" x {_fmt_span(end - start)} = harm {h.harm:.2f} [{h.vantage}]"
        )
    return tuple(lines)


def _day_part(moment: datetime, zone: tzinfo) -> str:
    hour = moment.astimezone(zone).hour
    return [name for begins, name in _DAY_PARTS if begins <= hour][-1]


def _local_span(start: datetime, end: datetime, zone: tzinfo, name: str) -> str:
    """'23:30-01:30+1d Asia/Tehran', noting a clock change inside the window."""
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    days = (local_end.date() - local_start.date()).days
    text = f"{local_start:%H:%M}-{local_end:%H:%M}{f'+{days}d' if days else ''} {name}"
    before, after = _offset(start, zone), _offset(end, zone)
    if before != after:
        text += f", clocks change UTC{_fmt_offset(before)} -> UTC{_fmt_offset(after)}"
    return text


# --- ranking ------------------------------------------------------------------------


def rank_windows(
    regions: Sequence[RegionState],
    *,
    duration: timedelta,
    now: datetime,
    within: timedelta = timedelta(hours=72),
    not_before: datetime | None = None,
    step: timedelta = timedelta(minutes=30),
    activity: Sequence[float] | None = None,
    top: int = 5,
) -> list[WindowScore]:
    """The ``top`` least harmful windows, best (lowest harm) first, earlier on ties.

    Candidates start every ``step`` on a UTC grid (multiples of ``step`` since
    the Unix epoch), from the later of ``now`` and ``not_before`` rounded up
    to the grid, and must end by ``now + within``. No candidate fits: [].
    """
    _need_aware(now, "now")
    if step <= timedelta(0):
        raise ValueError("the step between candidate windows must be positive")
    if top < 1:
        raise ValueError("top must be at least 1")
    earliest = now if not_before is None else max(now, _need_aware(not_before, "not_before"))
    weights = _activity(activity)
    scores = [
        score_window(regions, start, duration, activity=weights)
        for start in _candidates(_round_up(earliest, step), now + within - duration, step)
    ]
    scores.sort(key=lambda s: (round(s.harm, _HARM_DIGITS), s.start))
    return scores[:top]


def _candidates(first: datetime, last: datetime, step: timedelta) -> Iterator[datetime]:
    start = first
    while start <= last:
        yield start
        start += step


def _round_up(moment: datetime, step: timedelta) -> datetime:
    """The first instant at or after ``moment`` on the UTC grid of ``step``."""
    since_epoch = moment.astimezone(UTC) - _EPOCH
    steps = since_epoch // step + (1 if since_epoch % step else 0)
    return _EPOCH + steps * step


# --- output ---------------------------------------------------------------------


def render_table(scores: Sequence[WindowScore], regions: Sequence[RegionState]) -> str:
    """Plain text for ``--format table``: the regions, the windows, and why."""
    lines = ["Watched regions (dependence now):"]
    if not regions:
        lines.append("  none: no non-control vantage has a timezone")
    for region in regions:
        lines.append(
            f"  {region.vantage} ({region.country or '?'}, {region.timezone}):"
            f" crisis factor {dependence_factor(region):.2f}"
            f" ({', '.join(_dependence_reasons(region))})"
        )
    lines.append("")
    if not scores:
        lines.append("No candidate window fits.")
        return "\n".join(lines) + "\n"
    header = ["#", "window", "harm", *(f"{r.vantage} local" for r in regions)]
    rows = [header]
    for rank, score in enumerate(scores, 1):
        local = {h.vantage: h.local_span for h in score.regions}
        utc = f"{score.start:%Y-%m-%d} {_local_span(score.start, score.end, UTC, 'UTC')}"
        rows.append(
            [str(rank), utc, f"{score.harm:.2f}", *(local.get(r.vantage, "") for r in regions)]
        )
    lines.extend(_columns(rows))
    for rank, score in enumerate(scores, 1):
        lines.append("")
        lines.append(f"#{rank} {score.explanation[0]}")
        lines.extend(f"  {line}" for line in score.explanation[1:])
    return "\n".join(lines) + "\n"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def to_json(scores: Sequence[WindowScore], regions: Sequence[RegionState]) -> dict[str, Any]:
    """The ``lifeline.window/1`` document: regions, the curve used, and the windows.

    ``activity`` is the curve the windows were scored with (null without windows).
    """
    return {
        "schema": SCHEMA,
        "activity": list(scores[0].activity) if scores else None,
        "regions": [_region_json(r) for r in regions],
        "windows": [_score_json(rank, s) for rank, s in enumerate(scores, 1)],
    }


def _region_json(region: RegionState) -> dict[str, Any]:
    return {
        "vantage": region.vantage,
        "country": region.country,
        "timezone": region.timezone,
        "blocked": region.blocked,
        "total": region.total,
        "shutdown_recent": region.shutdown_recent,
        "recent_changes": region.recent_changes,
        "lookback_s": region.lookback.total_seconds(),
        "dependence": dependence_factor(region),
        "reasons": list(_dependence_reasons(region)),
    }


def _score_json(rank: int, score: WindowScore) -> dict[str, Any]:
    return {
        "rank": rank,
        "start": _rfc3339(score.start),
        "end": _rfc3339(score.end),
        "duration_s": (score.end - score.start).total_seconds(),
        "harm": score.harm,
        "regions": [
            {
                "vantage": h.vantage,
                "country": h.country,
                "timezone": h.timezone,
                "local_start": h.local_start,
                "local_end": h.local_end,
                "local": h.local_span,
                "hour_weight": h.hour_weight,
                "dependence": h.dependence,
                "hours": h.hours,
                "harm": h.harm,
                "reasons": list(h.reasons),
            }
            for h in score.regions
        ],
        "explanation": list(score.explanation),
    }


# --- small helpers ----------------------------------------------------------------------


def parse_when(text: str) -> datetime:
    """A moment from the command line ("2009-06-15T22:00-07:00", "...Z"), in UTC.

    The offset is required: a bare local time is ambiguous exactly where this
    command matters (which zone? which side of a clock change?).
    """
    cleaned = text.strip()
    if cleaned[-1:] in ("z", "Z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use e.g. 2009-06-15T22:00Z or 2009-06-15T22:00-07:00"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add Z or e.g. -07:00")
    return moment.astimezone(UTC)


def _parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 timestamp of a stored record, in UTC.

    Stored times are UTC by contract, so one without an offset is read as UTC
    (as the store itself reads it); user input goes through :func:`parse_when`.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an RFC 3339 time") from None
    else:
        raise ValueError(f"{what}: expected an RFC 3339 string, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _need_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry a timezone (naive datetimes are ambiguous)")
    return moment


def _activity(activity: Sequence[float] | None) -> tuple[float, ...]:
    """The curve to use, checked: 24 finite, non-negative weights."""
    if activity is None:
        return DEFAULT_ACTIVITY
    weights = tuple(float(w) for w in activity)
    if len(weights) != _HOURS_PER_DAY:
        raise ValueError(
            f"the activity curve needs {_HOURS_PER_DAY} weights (local hours 0-23),"
            f" got {len(weights)}"
        )
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError("activity weights must be finite and not negative")
    return weights


def _zone(name: str, vantage: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"vantage {vantage}: unknown timezone {name!r}") from None


def _fmt_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _fmt_span(span: timedelta) -> str:
    """'24h', '1h30m', '45m': whole minutes are precise enough for people."""
    hours, minutes = divmod(int(span.total_seconds()) // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def _rfc3339(moment: datetime) -> str:
    return rfc3339(moment, timespec="seconds")  # windows start on a grid of whole minutes

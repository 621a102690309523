"""`lifeline incidents`: the verdict timeline of the store, non-ok periods, newest first."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.export.common import (
    EXIT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    open_existing,
    resolve_data,
    resolve_time,
    unmatched_filters,
)
from exporter.incidents import (
    INCIDENT_SCHEMA,
    build_incidents,
    format_duration,
    select_incidents,
)
from exporter.incidents import Incident as Grouped
from exporter.store import StoreError, VerdictChange
from probes.records import Verdict
from probes.timefmt import parse_rfc3339, rfc3339

__all__ = [
    "INCIDENTS_SCHEMA",
    "TARGET_PERIODS_SCHEMA",
    "Incident",
    "format_duration",
    "incident_table",
    "incidents",
    "run_incidents",
]

#: ``--format json``: the incidents of :mod:`exporter.incidents`.
INCIDENTS_SCHEMA = INCIDENT_SCHEMA
#: ``--by target --format json``: one non-ok period per (service, target, vantage).
TARGET_PERIODS_SCHEMA = "lifeline.incidents/1"
#: The default table fits a terminal this wide.
TABLE_WIDTH = 120


@dataclass(frozen=True, slots=True)
class Incident:
    """One non-ok period of a (service, target, vantage), for ``--by target``: the JSON keys."""

    service: str
    target: str
    vantage: str
    verdict: str
    reason: str
    since: str
    until: str | None  # None while it goes on
    ongoing: bool
    last_measured: str | None  # for an ongoing one: when it was last confirmed, if known
    duration_s: float
    duration: str  # in words

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def incidents(
    changes: Iterable[VerdictChange],
    *,
    now: float | None = None,
    last_measured: Mapping[tuple[str, str, str], str] | None = None,
) -> list[Incident]:
    """Non-ok periods of a timeline, newest first, with their durations (ongoing ones until now).

    ``last_measured`` (the store's latest measurement time per key) says when an
    ongoing period was last confirmed: "ongoing" from a daemon that stopped an hour
    ago must not read as "blocked right now".
    """
    now = time.time() if now is None else now
    seen = last_measured or {}
    out: list[tuple[float, Incident]] = []
    for c in changes:
        if c.verdict == Verdict.OK:
            continue
        start = parse_rfc3339(c.since)
        end = now if c.until is None else parse_rfc3339(c.until)
        ongoing = c.until is None
        incident = Incident(
            service=c.service,
            target=c.target,
            vantage=c.vantage,
            verdict=c.verdict,
            reason=c.reason,
            since=c.since,
            until=c.until,
            ongoing=ongoing,
            last_measured=seen.get((c.service, c.target, c.vantage)) if ongoing else None,
            duration_s=round(max(0.0, end - start), 3),
            duration=format_duration(end - start),
        )
        out.append((start, incident))
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in out]


def _incident_table(items: Sequence[Incident]) -> str:
    if not items:
        return "no incidents: every recorded period is ok\n"
    head = (
        "SINCE", "UNTIL", "DURATION", "SERVICE", "TARGET", "VANTAGE", "VERDICT",
        "LAST MEASURED", "REASON",
    )  # fmt: skip
    rows = [
        (
            i.since,
            "ongoing" if i.ongoing else str(i.until),
            i.duration,
            i.service,
            i.target,
            i.vantage,
            i.verdict,
            (i.last_measured or "unknown") if i.ongoing else "-",
            i.reason,
        )
        for i in items
    ]
    last = len(head) - 1  # the reason is not padded
    widths = [max(len(head[k]), *(len(r[k]) for r in rows)) for k in range(last)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + "  " + head[last]]
    for r in rows:
        lines.append(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[last]
        )
    ongoing = sum(1 for i in items if i.ongoing)
    lines += ["", f"{len(items)} incidents, {ongoing} ongoing"]
    return "\n".join(lines) + "\n"


def _cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis marking what was cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _where(i: Grouped) -> str:
    return "all" if i.vantage is None else i.vantage  # an outage: --format json lists where


def _what(i: Grouped) -> str:
    if i.service is not None:
        return i.service
    return i.services[0] if len(i.services) == 1 else f"{len(i.services)} services"


def _targets(i: Grouped) -> str:
    names = sorted({t for _, t, _ in i.targets})
    if len(names) == 1:
        return names[0]
    return f"{len(names)}: " + " ".join(names)


#: (heading, most characters) of the default table; the last column takes what is left.
_COLUMNS = (
    ("SINCE", 20),
    ("UNTIL", 20),
    ("DURATION", 8),
    ("VANTAGE", 16),
    ("SERVICE", 18),
    ("METHOD", 12),
    ("TARGETS", 0),
)


#: An ongoing incident not measured for this long is shown as last seen, not "ongoing":
#: nothing says it still goes on (a stopped daemon's store, imported OONI data).
STALE_S = 2 * 86400


def _stale(i: Grouped, now: float) -> bool:
    return i.ongoing and i.last_measured is not None and now - i.last_measured > STALE_S


def _until(i: Grouped, now: float) -> str:
    if i.until is not None:
        return i.until
    if _stale(i, now) and i.last_measured is not None:
        return "seen " + rfc3339(i.last_measured, timespec="seconds")[:10]
    return "ongoing"


def incident_table(items: Sequence[Grouped], *, now: float, width: int = TABLE_WIDTH) -> str:
    """The incidents as a table no wider than ``width``: long cells end in an ellipsis.

    An ongoing incident whose targets were last measured over :data:`STALE_S` ago says
    when it was last seen (``seen YYYY-MM-DD``), its duration up to then.
    """
    if not items:
        return "no incidents: every recorded period is ok\n"
    rows = [
        (
            i.since,
            _until(i, now),
            format_duration(
                i.duration_s(i.last_measured if _stale(i, now) and i.last_measured else now)
            ),
            _where(i),
            _what(i),
            i.verdict,
            _targets(i),
        )
        for i in items
    ]
    heads = [h for h, _ in _COLUMNS]
    widths = [
        min(cap, max(len(heads[k]), *(len(r[k]) for r in rows)))
        for k, (_, cap) in enumerate(_COLUMNS[:-1])
    ]
    widths.append(max(len(heads[-1]), width - sum(widths) - 2 * (len(widths))))
    lines = []
    for r in [tuple(heads), *rows]:
        cells = [_cut(v, w).ljust(w) for v, w in zip(r, widths, strict=True)]
        lines.append(_cut("  ".join(cells).rstrip(), width))
    ongoing = sum(1 for i in items if i.ongoing)
    stale = sum(1 for i in items if _stale(i, now))
    total = f"{len(items)} incidents, {ongoing} ongoing"
    if stale:
        days = STALE_S // 86400
        total += f" ({stale} not measured for over {days} days: UNTIL says when last seen)"
    lines += ["", total]
    return "\n".join(lines) + "\n"


def run_incidents(args: argparse.Namespace) -> int:
    """`lifeline incidents`: what was blocked where, how, from when to when."""
    now = time.time()
    since: str | None = None
    if args.since is not None:
        try:
            since = resolve_time(args.since, now=now)
        except ValueError as exc:
            print(f"lifeline: error: --since: {exc}", file=sys.stderr)
            return EXIT_USAGE
    resolved = resolve_data(args)
    if resolved is None:
        return EXIT_USAGE
    store = open_existing(resolved[0])
    if store is None:
        return EXIT_FOUND
    try:
        for problem in unmatched_filters(store, args.service or (), args.vantage or ()):
            print(f"lifeline: {problem}", file=sys.stderr)
        seen = {(r.service, r.target, r.vantage): r.time for r in store.latest()}
        changes = store.changes()  # all: an incident's first periods may end before --since
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_FOUND
    finally:
        store.close()
    since_t = None if since is None else parse_rfc3339(since)
    if args.by == "target":
        return _by_target(args, changes, seen, now, since_t)
    items = select_incidents(
        build_incidents(changes, last_measured=seen),
        services=args.service,
        vantages=args.vantage,
        since=since_t,
        ongoing=args.ongoing,
    )
    if args.format == "json":
        doc = {"schema": INCIDENTS_SCHEMA, "incidents": [i.to_dict(now) for i in items]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(incident_table(items, now=now))
    sys.stdout.flush()
    return EXIT_OK


def _by_target(
    args: argparse.Namespace,
    changes: Sequence[VerdictChange],
    seen: Mapping[tuple[str, str, str], str],
    now: float,
    since: float | None,
) -> int:
    """``--by target``: one row per non-ok period of each (service, target, vantage)."""
    mine = [
        c
        for c in changes
        if (not args.service or c.service in args.service)
        and (not args.vantage or c.vantage in args.vantage)
        and (not args.ongoing or c.until is None)
        and (since is None or c.until is None or parse_rfc3339(c.until) >= since)
    ]
    items = incidents(mine, now=now, last_measured=seen)
    if args.format == "json":
        doc = {"schema": TARGET_PERIODS_SCHEMA, "incidents": [i.to_dict() for i in items]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(_incident_table(items))
    sys.stdout.flush()
    return EXIT_OK

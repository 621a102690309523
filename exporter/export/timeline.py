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

from exporter.export.common import EXIT_FOUND, EXIT_OK, EXIT_USAGE, open_existing, resolve_data
from exporter.store import StoreError, VerdictChange
from probes.records import Verdict
from probes.timefmt import parse_rfc3339

__all__ = ["INCIDENTS_SCHEMA", "Incident", "format_duration", "incidents", "run_incidents"]

INCIDENTS_SCHEMA = "lifeline.incidents/1"


@dataclass(frozen=True, slots=True)
class Incident:
    """One non-ok period of a (service, target, vantage); its fields are the JSON's keys."""

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


def run_incidents(args: argparse.Namespace) -> int:
    """`lifeline incidents`: what was blocked where, how, from when to when."""
    resolved = resolve_data(args)
    if resolved is None:
        return EXIT_USAGE
    store = open_existing(resolved[0])
    if store is None:
        return EXIT_FOUND
    try:
        seen = {(r.service, r.target, r.vantage): r.time for r in store.latest()}
        items = incidents(store.changes(), last_measured=seen)
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_FOUND
    finally:
        store.close()
    if args.format == "json":
        doc = {"schema": INCIDENTS_SCHEMA, "incidents": [i.to_dict() for i in items]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(_incident_table(items))
    sys.stdout.flush()
    return EXIT_OK

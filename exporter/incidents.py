"""The incident model: verdict periods of targets grouped into what a responder calls incidents.

Pure functions of plain data (no I/O, the clock passed in). ``lifeline incidents``,
``/api/v1/incidents`` and the status page's "Now" build their incidents here, and
so may anything else that reports incident starts and ends (logs, alerts).

The input is the store's timeline (``exporter.store.VerdictChange``: one period
per (service, target, vantage) and verdict) or anything of that shape
(:class:`Period`). Non-ok periods are grouped by what they say:

- ``vantage_down`` at a vantage is **one incident for that vantage**, holding
  every service (and target) it took down: a shutdown is one event, not one per
  target or per service. Its ``service`` is None, its ``services`` lists them.
- ``service_down`` is an outage: the control fails too, so it is **one incident
  for the service** wherever it is seen. Its ``vantage`` is None ("all"), its
  ``vantages`` lists where it was seen.
- every other verdict (a blocking method, ``throttled``, ``anomaly``,
  ``unreachable``, ``error``) is one incident per (service, vantage, verdict).

Within a group, periods of different targets that overlap or touch merge into
one incident; it begins with the first of them and ends when none of its
targets has that verdict any more (ongoing while any still has). A period that
begins after the incident ended (even by a second) is a new incident.

Order (:data:`RANK`, worst first): shutdowns (``vantage_down``), then blocking
by method (``dns_blocked``, ``tcp_blocked``, ``tls_blocked``, ``http_blocked``,
``throttled``), then ``anomaly``, then ``unreachable`` (failing with nothing to
tell why), then outages (``service_down``), then ``error`` (our own failure to
measure). A verdict this code does not know comes last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from probes.model import CANARY_SERVICE
from probes.records import Verdict
from probes.timefmt import parse_rfc3339, rfc3339

__all__ = [
    "INCIDENT_SCHEMA",
    "RANK",
    "Incident",
    "Period",
    "PeriodRow",
    "build_incidents",
    "format_duration",
    "incident_group",
    "rank",
    "select_incidents",
]

#: The schema of the JSON list of incidents (``lifeline incidents --format json``, the API).
INCIDENT_SCHEMA = "lifeline.incidents/2"

#: Worst first: the order incidents are listed in (lower is worse).
RANK: dict[str, int] = {
    Verdict.VANTAGE_DOWN: 0,
    Verdict.DNS_BLOCKED: 1,
    Verdict.TCP_BLOCKED: 2,
    Verdict.TLS_BLOCKED: 3,
    Verdict.HTTP_BLOCKED: 4,
    Verdict.THROTTLED: 5,
    Verdict.ANOMALY: 6,
    Verdict.UNREACHABLE: 7,
    Verdict.SERVICE_DOWN: 8,
    Verdict.ERROR: 9,
}
_UNKNOWN_RANK = 10


def rank(verdict: str) -> int:
    """Where incidents of this verdict are listed (lower is worse)."""
    return RANK.get(verdict, _UNKNOWN_RANK)


class PeriodRow(Protocol):
    """One verdict period of one (service, target, vantage): ``VerdictChange`` has this shape."""

    @property
    def service(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def since(self) -> str: ...  # RFC 3339
    @property
    def until(self) -> str | None: ...  # None while it goes on
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Period:
    """A :class:`PeriodRow` made by hand (e.g. from a current verdict that the store lacks)."""

    service: str
    target: str
    vantage: str
    verdict: str
    since: str
    until: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident: one method (verdict) over one period, where, and the targets it covers.

    ``service`` is None for a shutdown (``vantage_down``: it holds ``services``);
    ``vantage`` is None for an outage (``service_down``: seen at ``vantages``).
    """

    verdict: str  # the method: dns_blocked, tcp_blocked, ..., vantage_down, service_down
    service: str | None
    vantage: str | None
    services: tuple[str, ...]  # every service it covers (one unless a shutdown)
    vantages: tuple[str, ...]  # every vantage it is seen at (one unless an outage)
    targets: tuple[tuple[str, str, str], ...]  # (service, target, vantage), sorted
    start: float  # epoch seconds
    end: float | None  # None while it goes on
    reason: str  # the first period's reason
    last_measured: float | None = None  # ongoing: the newest measurement confirming it, if known

    @property
    def ongoing(self) -> bool:
        return self.end is None

    @property
    def rank(self) -> int:
        return rank(self.verdict)

    @property
    def since(self) -> str:
        return rfc3339(self.start, timespec="seconds")

    @property
    def until(self) -> str | None:
        return None if self.end is None else rfc3339(self.end, timespec="seconds")

    @property
    def key(self) -> str:
        """A stable name of this incident: verdict, where, and when it began."""
        return f"{self.verdict}/{self.service or '*'}/{self.vantage or '*'}/{self.since}"

    def duration_s(self, now: float) -> float:
        return max(0.0, (now if self.end is None else self.end) - self.start)

    def to_dict(self, now: float) -> dict[str, Any]:
        """The JSON object of the CLI and the API (times to the second, UTC)."""
        return {
            "id": self.key,
            "verdict": self.verdict,
            "service": self.service,
            "vantage": self.vantage,
            "services": list(self.services),
            "vantages": list(self.vantages),
            "targets": [{"service": s, "target": t, "vantage": v} for s, t, v in self.targets],
            "since": self.since,
            "until": self.until,
            "ongoing": self.ongoing,
            "duration_s": int(self.duration_s(now)),
            "duration": format_duration(self.duration_s(now)),
            "last_measured": (
                None
                if self.last_measured is None or not self.ongoing
                else rfc3339(self.last_measured, timespec="seconds")
            ),
            "reason": self.reason,
        }


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


# --- building ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    key: tuple[str, str, str]  # (service, target, vantage)
    start: float
    end: float  # math.inf while it goes on
    reason: str


def incident_group(verdict: str, service: str, vantage: str) -> tuple[str, str | None, str | None]:
    """(verdict, service, vantage) of the incident a verdict belongs to: a down
    vantage is one incident for the vantage (service None), an outage one for the
    service (vantage None), anything else one per (service, vantage). The one rule
    (serve's incident log lines, ``exporter/transitions.py``, group by it too)."""
    if verdict == Verdict.VANTAGE_DOWN:
        return (verdict, None, vantage)
    if verdict == Verdict.SERVICE_DOWN:
        return (verdict, service, None)
    return (verdict, service, vantage)


def _group(p: PeriodRow) -> tuple[str, str | None, str | None]:
    """(verdict, service, vantage) of the incident a period belongs to."""
    return incident_group(p.verdict, p.service, p.vantage)


def build_incidents(
    periods: Iterable[PeriodRow],
    *,
    last_measured: Mapping[tuple[str, str, str], float | str] | None = None,
) -> list[Incident]:
    """The incidents of these verdict periods, worst first (see the module's text).

    ``last_measured`` ((service, target, vantage) -> epoch seconds or RFC 3339, e.g.
    the store's ``latest`` rows) says when an ongoing incident was last confirmed: an
    incident "ongoing" from a daemon that stopped an hour ago is not "blocked now".
    Periods whose times cannot be read are skipped.
    """
    groups: dict[tuple[str, str | None, str | None], list[_Span]] = {}
    for p in periods:
        if p.verdict == Verdict.OK:
            continue
        try:
            start = parse_rfc3339(p.since)
            end = math.inf if p.until is None else parse_rfc3339(p.until)
        except (ValueError, TypeError):
            continue
        span = _Span((p.service, p.target, p.vantage), start, max(start, end), p.reason)
        groups.setdefault(_group(p), []).append(span)
    seen = {k: _epoch(v) for k, v in (last_measured or {}).items()}
    out: list[Incident] = []
    for (verdict, service, vantage), spans in groups.items():
        spans.sort(key=lambda s: (s.start, s.key))
        cluster: list[_Span] = []
        reach = -math.inf
        for span in spans:
            if cluster and span.start > reach:
                out.append(_incident(verdict, service, vantage, cluster, seen))
                cluster = []
            reach = max(reach, span.end) if cluster else span.end
            cluster.append(span)
        if cluster:
            out.append(_incident(verdict, service, vantage, cluster, seen))
    out.sort(key=_order)
    return out


def _epoch(value: float | str) -> float | None:
    if isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except ValueError:
            return None
    return float(value)


def _incident(
    verdict: str,
    service: str | None,
    vantage: str | None,
    spans: Sequence[_Span],
    seen: Mapping[tuple[str, str, str], float | None],
) -> Incident:
    keys = sorted({s.key for s in spans})
    services = sorted({k[0] for k in keys})
    if verdict == Verdict.VANTAGE_DOWN and len(services) > 1 and CANARY_SERVICE in services:
        services.remove(CANARY_SERVICE)  # the canaries say the vantage is down; not news
    end = max(s.end for s in spans)
    confirmed = [t for s in spans if s.end == math.inf and (t := seen.get(s.key)) is not None]
    return Incident(
        verdict=verdict,
        service=service,
        vantage=vantage,
        services=tuple(services),
        vantages=tuple(sorted({k[2] for k in keys})),
        targets=tuple(keys),
        start=spans[0].start,
        end=None if end == math.inf else end,
        reason=spans[0].reason,
        last_measured=max(confirmed) if confirmed else None,
    )


def _order(i: Incident) -> tuple[bool, int, float, str, str]:
    """Ongoing first, worst first; among equals the oldest first; ended ones newest first."""
    if i.end is None:
        return (False, i.rank, i.start, i.service or "", i.vantage or "")
    return (True, 0, -i.end, i.service or "", i.vantage or "")


# --- selecting ---------------------------------------------------------------------------


def select_incidents(
    incidents: Iterable[Incident],
    *,
    services: Sequence[str] = (),
    vantages: Sequence[str] = (),
    since: float | None = None,
    ongoing: bool = False,
) -> list[Incident]:
    """The incidents that touch one of ``services`` and one of ``vantages`` (any when empty),
    not ended before ``since``, and (with ``ongoing``) still going on."""
    out = []
    for i in incidents:
        if services and not set(services) & set(i.services):
            continue
        if vantages and not set(vantages) & set(i.vantages):
            continue
        if since is not None and i.end is not None and i.end < since:
            continue
        if ongoing and not i.ongoing:
            continue
        out.append(i)
    return out

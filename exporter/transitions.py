"""When `serve` logs: once per transition, never once per round.

- :class:`IncidentLog`: confirmed verdicts (what the board publishes) grouped
  into incidents: one per (service, vantage, verdict) for a blocking method;
  one per vantage for ``vantage_down`` (a shutdown holds every service); one
  per service for ``service_down`` (an outage is seen everywhere). The first
  target in is ``incident_start``, the last one out ``incident_end``.
- :class:`AgentWatch`: an agent that stops answering is ``agent_lost`` once,
  and ``agent_recovered`` once when it answers again.

The lines themselves are :mod:`exporter.events`'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exporter import events
from exporter.board import Entry
from exporter.incidents import incident_group
from exporter.schedule import Key
from probes.classify import AGENT_UNREACHABLE
from probes.model import Vantage, redact_url
from probes.records import Measurement, Verdict
from probes.timefmt import rfc3339

__all__ = ["AgentWatch", "IncidentKey", "IncidentLog", "incident_key"]

#: (service or None for a whole vantage, vantage or None for every vantage, verdict)
IncidentKey = tuple[str | None, str | None, str]


def incident_key(service: str, vantage: str, verdict: str) -> IncidentKey | None:
    """The incident a (service, vantage)'s verdict belongs to; None for ``ok``."""
    if verdict == Verdict.OK.value:
        return None
    _, in_service, at_vantage = incident_group(verdict, service, vantage)
    return (in_service, at_vantage, verdict)


@dataclass(slots=True)
class _Incident:
    since: str
    members: set[Key] = field(default_factory=set)  # (service, target, vantage) in it now
    affected: list[str] = field(default_factory=list)  # every target it held, in order

    def join(self, key: Key) -> None:
        self.members.add(key)
        if key[1] not in self.affected:
            self.affected.append(key[1])


class IncidentLog:
    """Confirmed verdict changes in, incident start and end lines out."""

    def __init__(self) -> None:
        self._open: dict[IncidentKey, _Incident] = {}
        self._of: dict[Key, IncidentKey] = {}

    def seed(self, entries: Iterable[Entry]) -> None:
        """Incidents already going on (restored from the store): known, not told again."""
        for e in entries:
            self._enter((e.service, e.target, e.vantage), e.verdict, e.since, quiet=True)

    def changed(self, entry: Entry) -> None:
        """A published verdict that differs from the one before (or is the first one)."""
        key = (entry.service, entry.target, entry.vantage)
        self._leave(key, entry.since, why="confirmed back to normal")
        self._enter(key, entry.verdict, entry.since, quiet=False)

    def retain(self, keys: Iterable[Key]) -> None:
        """A reload: incidents whose every target is no longer configured end now."""
        keep = set(keys)
        for key in [k for k in self._of if k not in keep]:
            self._leave(key, rfc3339(time.time()), why="no longer configured")

    def _enter(self, key: Key, verdict: str, since: str, *, quiet: bool) -> None:
        ik = incident_key(key[0], key[2], verdict)
        if ik is None:
            return
        incident = self._open.get(ik)
        if incident is None:
            incident = self._open[ik] = _Incident(since)
            incident.join(key)
            if not quiet:
                events.incident_start(ik[0], ik[1], ik[2], incident.affected, since)
        else:
            incident.join(key)
        self._of[key] = ik

    def _leave(self, key: Key, until: str, *, why: str) -> None:
        ik = self._of.pop(key, None)
        if ik is None:
            return
        incident = self._open[ik]
        incident.members.discard(key)
        if not incident.members:
            del self._open[ik]
            events.incident_end(
                ik[0], ik[1], ik[2], incident.affected, incident.since, until, why=why
            )


class AgentWatch:
    """Whether each agent answers, from the measurements its vantages bring back.

    A measurement counts only when it started after the last change was told:
    one that was already on its way when an agent came back (and times out
    later) must not call it lost again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lost: dict[str, str] = {}  # agent URL -> since (RFC 3339)
        self._changed: dict[str, float] = {}  # agent URL -> when (clock) the last change was told

    def measured(self, m: Measurement, vantage: Vantage) -> None:
        agent = vantage.agent
        if agent is None:
            return
        now = self._clock()
        if now - m.duration_s < self._changed.get(agent.url, float("-inf")):
            return
        lost = m.error is not None and m.error.startswith(AGENT_UNREACHABLE)
        shown = redact_url(agent.url)
        if lost and agent.url not in self._lost:
            self._lost[agent.url], self._changed[agent.url] = m.time, now
            events.agent_lost(vantage.name, shown, _cause(m.error or "", agent.url))
        elif not lost and agent.url in self._lost:
            since = self._lost.pop(agent.url)
            self._changed[agent.url] = now
            events.agent_recovered(vantage.name, shown, since)


def _cause(error: str, url: str) -> str:
    """``vantage_unreachable: agent URL: why`` -> ``why``."""
    return error.split(f"agent {url}: ", 1)[-1]

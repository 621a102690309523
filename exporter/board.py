"""What `lifeline serve` publishes: one :class:`Entry` per (service, target, vantage).

:class:`Board` holds the published verdicts and serve's own health counters;
the metrics, the API and the page read it. The driver
(:class:`exporter.scheduler.Monitor`) publishes to it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.schedule import Key, Lateness
from probes.model import CANARY_SERVICE, Config
from probes.records import Measurement, Result, Verdict
from probes.stages import STAGES

if TYPE_CHECKING:
    from exporter.store import Latest

__all__ = ["Board", "Entry"]


@dataclass(slots=True)
class Entry:
    """The published verdict of one (service, target, vantage).

    Only what the metrics, the status document and the page show is kept, not
    the whole :class:`Result` (body head, certificates, headers, the control's
    measurement): at tens of thousands of series that was most of serve's memory.
    """

    service: str
    target: str
    vantage: str
    verdict: str
    reason: str
    since: str  # RFC 3339: when this verdict began
    time: str  # RFC 3339: the latest measurement that carries it
    #: whether that measurement succeeded; None when restored from the store and not re-measured
    succeeded: bool | None = None
    #: (stage, seconds) of each stage that ran in that measurement, in stage order
    durations: tuple[tuple[str, float], ...] = ()


def _durations(m: Measurement) -> tuple[tuple[str, float], ...]:
    stages = m.stages
    return tuple((name, stages[name].duration_s) for name in STAGES.names if name in stages)


@dataclass(slots=True)
class Board:
    """Everything `serve` shows: published verdicts and its own health counters."""

    config: Config
    entries: dict[Key, Entry] = field(default_factory=dict)
    measurements: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    skipped: int = 0
    #: store batches that failed to be written (the store counts them)
    store_writes_failed: Callable[[], int] = lambda: 0
    log_failures: Callable[[], int] = lambda: 0
    tasks: Callable[[], int] = lambda: 0  # asyncio tasks alive in serve's event loop
    #: ``--workers``: (configured, running, restarts) of the measuring workers; None without
    workers: Callable[[], tuple[int, int, int]] | None = None
    reload_ok: bool = True
    reload_time: float = field(default_factory=time.time)
    ready: bool = False
    lateness: Lateness = field(default_factory=Lateness)
    #: bumped whenever an entry or the set of keys changes (renderers cache by it)
    version: int = 0
    _order: list[Key] = field(default_factory=list, init=False, repr=False)
    _wanted: set[Key] = field(default_factory=set, init=False, repr=False)
    _watchers: list[Callable[[Key, Entry], None]] = field(
        default_factory=list, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._order = self._config_keys()
        self._wanted = set(self._order)

    @property
    def store_failures(self) -> int:
        return self.store_writes_failed()

    def _config_keys(self) -> list[Key]:
        from probes.runner import jobs_for

        return [j.key for j in jobs_for(self.config)]

    def keys(self) -> list[Key]:
        """Every (service, target, vantage) of the config, in config order."""
        return list(self._order)

    def watch(self, published: Callable[[Key, Entry], None]) -> None:
        """Have ``published(key, entry)`` called after each :meth:`publish` (pre-rendering).

        Only publishing calls it: a watcher sees any other change (a restore, a
        new config) by :attr:`version` moving by more than its calls account for.
        """
        self._watchers.append(published)

    def publish(self, result: Result) -> None:
        m = result.measurement
        key = (m.service, m.target, m.vantage)
        if key not in self._wanted:  # measured under a config that was just replaced
            return
        old = self.entries.get(key)
        verdict = result.verdict.value
        since = old.since if old is not None and old.verdict == verdict else m.time
        self.entries[key] = entry = Entry(
            *key, verdict, result.reason, since, m.time, m.succeeded, _durations(m)
        )
        self.version += 1
        for published in self._watchers:
            published(key, entry)

    def count(self, result: Result) -> None:
        m = result.measurement
        if (m.service, m.target, m.vantage) not in self._wanted:
            return
        self.measurements[(m.service, m.vantage, result.verdict.value)] += 1

    def restore(self, rows: Iterable[Latest]) -> None:
        """Current verdicts from the store, for keys that are still configured."""
        wanted = self._wanted
        verdicts = Verdict.__members__.values()
        for row in rows:
            key = (row.service, row.target, row.vantage)
            if key in wanted and row.verdict in verdicts:
                self.entries[key] = Entry(
                    *key, row.verdict, row.reason, row.since, row.time or row.since
                )
        self.version += 1

    def retarget(self, config: Config) -> None:
        """A new config: drop what it no longer names (label values stay bounded)."""
        self.config = config
        self._order = self._config_keys()
        self._wanted = wanted = set(self._order)
        self.entries = {k: e for k, e in self.entries.items() if k in wanted}
        services = {k[0] for k in wanted}
        vantages = {k[2] for k in wanted}
        self.measurements = Counter(
            {k: n for k, n in self.measurements.items() if k[0] in services and k[1] in vantages}
        )
        self.version += 1

    def ordered(self) -> list[Entry]:
        entries = self.entries
        return [e for k in self._order if (e := entries.get(k)) is not None]

    def vantage_up(self, vantage: str) -> bool | None:
        """False when every canary of the vantage fails; None before anything is known.

        Without canaries, a vantage is up when any of its measurements succeeded.
        """
        return self.vantages_up().get(vantage)

    def vantages_up(self) -> dict[str, bool | None]:
        """:meth:`vantage_up` of every configured vantage, in one pass over the entries."""
        canary: dict[str, list[bool]] = {}
        other: dict[str, list[bool]] = {}
        for e in self.entries.values():
            seen = canary if e.service == CANARY_SERVICE else other
            flags = seen.get(e.vantage)
            if flags is None:
                flags = seen[e.vantage] = [False, False]  # [any entry, any succeeded]
            flags[0] = True
            if not flags[1] and _succeeded(e):
                flags[1] = True
        out: dict[str, bool | None] = {}
        for v in self.config.vantages:
            flags = canary.get(v.name) or other.get(v.name)
            out[v.name] = None if flags is None else flags[1]
        return out


def _succeeded(entry: Entry) -> bool:
    if entry.succeeded is not None:
        return entry.succeeded
    return entry.verdict == Verdict.OK.value

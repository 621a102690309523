"""When `lifeline serve` measures what, and what it publishes.

Two plain policy classes decide, without any I/O (STYLE #6):

- :class:`SchedulePolicy`: every target is one *slot* (all of its vantages
  together, so the control's observation is taken close in time to the
  others'); slots are spread over the interval with a little jitter, so the
  start is no thundering herd; a slot still running when it is due again is
  skipped and counted, so no backlog can grow.
- :class:`Confirmation`: a verdict that differs from the published one is
  held back until an immediate re-probe (of that vantage and the control)
  says the same, so one lost packet pages nobody.

:class:`Board` holds what is published (the metrics, the API and the page
read it). :class:`Monitor` is the thin async driver that awaits the
measurements and feeds the policies, the board, the store and the probe log.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import heapq
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from probes.model import CANARY_SERVICE, Config, Target, Vantage
from probes.records import EncodedRecord, Measurement, Result, Verdict
from probes.stages import STAGES

if TYPE_CHECKING:
    from exporter.logs import ProbeLog
    from exporter.store import AsyncStore
    from probes.runner import Job, Observations
    from probes.workers import MeasuringPool

__all__ = [
    "Board",
    "Confirmation",
    "Decision",
    "Entry",
    "Lateness",
    "Measurer",
    "Monitor",
    "SchedulePolicy",
    "Slot",
    "epoch",
    "rfc3339",
    "runner_bounds",
    "slots_for",
]

Key = tuple[str, str, str]  # (service, target URL, vantage)

#: The store gets the published records in one transaction every this many seconds...
STORE_FLUSH_S = 0.5
#: ... or as soon as this many are waiting.
STORE_BATCH = 256

#: Share of a slot's spacing used for random jitter: slots stay in order but
#: two daemons started together do not probe in lockstep.
JITTER_FRACTION = 0.5


def rfc3339(ts: float) -> str:
    """An epoch time as RFC 3339 UTC with microseconds (the records' format: probes.timefmt)."""
    from probes.timefmt import rfc3339 as shared

    return shared(ts)


def epoch(text: str) -> float:
    """An RFC 3339 time as epoch seconds (naive times are taken as UTC)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --- the schedule --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """One target measured from every vantage at once."""

    service: str
    target: Target
    jobs: tuple[Job, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.target.url)


def slots_for(config: Config) -> list[Slot]:
    """One slot per (service, target), canaries first, in config order."""
    from probes.runner import jobs_for

    grouped: dict[tuple[str, str], list[Job]] = {}
    targets: dict[tuple[str, str], Target] = {}
    for job in jobs_for(config):
        key = (job.service, job.target.url)
        grouped.setdefault(key, []).append(job)
        targets.setdefault(key, job.target)
    order = sorted(grouped, key=lambda k: k[0] != CANARY_SERVICE)  # stable: canaries first
    return [Slot(k[0], targets[k], tuple(grouped[k])) for k in order]


class SchedulePolicy:
    """Which measurements start at a given time (monotonic seconds); no I/O, no clock of its own.

    Slots come round once per interval. A measurement still running when its
    slot comes round again is skipped (and counted) while the slot's other
    vantages go ahead, so one dead vantage neither delays the others nor
    lets a backlog grow.

    The due times sit in a heap: a wake-up costs O(log slots) per slot that
    comes round, not a walk over every slot (which made a round quadratic).
    """

    def __init__(
        self,
        slots: Sequence[Slot],
        interval: float,
        *,
        start: float,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.slots = list(slots)
        rng = rng or random.Random()
        spacing = interval / max(1, len(self.slots))
        #: (due time, index into self.slots): the index breaks ties in config order
        self._heap: list[tuple[float, int]] = [
            (start + i * spacing + rng.uniform(0.0, spacing * JITTER_FRACTION), i)
            for i in range(len(self.slots))
        ]
        heapq.heapify(self._heap)
        self._latest = -math.inf  # the latest `now` seen, to notice a clock that went back
        self._running: set[Key] = set()
        #: jobs not finished once yet: `complete` is asked after every measurement
        self._undone: set[Key] = {j.key for s in self.slots for j in s.jobs}
        #: measurements not taken because the previous one overran or the driver fell behind
        self.skipped = 0

    def due(self, now: float) -> list[tuple[Slot, tuple[Job, ...]]]:
        """Slots that come round now, each with the jobs to start (those not still running).

        Each due time moves on by whole intervals: nothing queues up.
        """
        return [(slot, jobs) for slot, jobs, _ in self.due_at(now)]

    def due_at(
        self, now: float, limit: int | None = None
    ) -> list[tuple[Slot, tuple[Job, ...], float]]:
        """Like :meth:`due`, with the time each slot was due (for the lateness metric).

        At most ``limit`` slots; the others stay due, for the next call.
        """
        if now < self._latest:
            self._rewind(now)
        self._latest = now
        heap = self._heap
        out: list[tuple[Slot, tuple[Job, ...], float]] = []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            at, i = heap[0]
            slot = self.slots[i]
            missed = math.floor((now - at) / self.interval)  # rounds that passed entirely
            heapq.heapreplace(heap, (at + (missed + 1) * self.interval, i))
            idle = tuple(j for j in slot.jobs if j.key not in self._running)
            self.skipped += len(slot.jobs) * missed + (len(slot.jobs) - len(idle))
            if idle:
                self._running.update(j.key for j in idle)
                out.append((slot, idle, at + missed * self.interval))
        return out

    def _rewind(self, now: float) -> None:
        """The clock went backwards: pull slots more than one interval ahead back into the cycle.

        Only a clock that went backwards puts a slot that far ahead; keeping its
        place in the cycle beats stalling until the clock catches up again. Rare,
        so a pass over every slot is fine here.
        """
        limit = now + self.interval
        moved = False
        for n, (at, i) in enumerate(self._heap):
            if at > limit:
                ahead = math.floor((at - now) / self.interval)
                self._heap[n] = (at - ahead * self.interval, i)
                moved = True
        if moved:
            heapq.heapify(self._heap)

    def finished(self, job: Job) -> None:
        self._running.discard(job.key)
        self._undone.discard(job.key)

    def next_due(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def complete(self) -> bool:
        """Every job has finished at least once (one full round)."""
        return not self._undone


# --- confirmation ----------------------------------------------------------------


class Decision(Enum):
    PUBLISH = "publish"
    CONFIRM = "confirm"  # re-probe this vantage and the control before publishing


class Confirmation:
    """Holds a changed verdict back until a re-probe agrees that it changed.

    The re-probe's result is what gets published: if it is back to the
    published verdict, the blip is dropped; if it differs too (two
    measurements in a row disagree with the published verdict), it is the
    new verdict, and the first result is published before it when both agree
    so that the change dates from the first observation.
    """

    def __init__(self, published: Mapping[Key, str] | None = None) -> None:
        self._published: dict[Key, str] = dict(published or {})
        self._pending: dict[Key, Result] = {}

    @staticmethod
    def key(result: Result) -> Key:
        m = result.measurement
        return (m.service, m.target, m.vantage)

    def offer(self, result: Result) -> Decision:
        key = self.key(result)
        current = self._published.get(key)
        if current is None or current == result.verdict.value:
            self._published[key] = result.verdict.value
            self._pending.pop(key, None)
            return Decision.PUBLISH
        self._pending[key] = result
        return Decision.CONFIRM

    def pending(self, key: Key) -> bool:
        return key in self._pending

    def settle(self, result: Result) -> list[Result]:
        """The re-probe's result came: what to publish, in order."""
        key = self.key(result)
        first = self._pending.pop(key, None)
        self._published[key] = result.verdict.value
        if first is not None and first.verdict == result.verdict:
            return [first, result]
        return [result]

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget everything about keys no longer in the config."""
        keep = set(keys)
        self._published = {k: v for k, v in self._published.items() if k in keep}
        self._pending = {k: v for k, v in self._pending.items() if k in keep}


# --- what is published --------------------------------------------------------------

#: Upper bounds (seconds) of the lateness histogram's buckets: from "on time" to
#: "a whole interval late" for intervals from a few seconds to an hour.
LATENESS_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass(slots=True)
class Lateness:
    """How long after its slot was due each scheduled measurement actually started.

    A measurement that waits for a free place in the runner's bounds is late
    without being skipped; this makes the wait visible
    (``lifeline_measurement_lateness_seconds``).
    """

    buckets: tuple[float, ...] = LATENESS_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    total: float = 0.0
    late: int = 0  # started more than one interval after they were due

    def observe(self, seconds: float, *, interval: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        if seconds > interval:
            self.late += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


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
    store_failures: int = 0
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

    def __post_init__(self) -> None:
        self._order = self._config_keys()
        self._wanted = set(self._order)

    def _config_keys(self) -> list[Key]:
        from probes.runner import jobs_for

        return [j.key for j in jobs_for(self.config)]

    def keys(self) -> list[Key]:
        """Every (service, target, vantage) of the config, in config order."""
        return list(self._order)

    def publish(self, result: Result) -> None:
        m = result.measurement
        key = (m.service, m.target, m.vantage)
        if key not in self._wanted:  # measured under a config that was just replaced
            return
        old = self.entries.get(key)
        verdict = result.verdict.value
        since = old.since if old is not None and old.verdict == verdict else m.time
        self.entries[key] = Entry(
            *key, verdict, result.reason, since, m.time, m.succeeded, _durations(m)
        )
        self.version += 1

    def count(self, result: Result) -> None:
        m = result.measurement
        if (m.service, m.target, m.vantage) not in self._wanted:
            return
        self.measurements[(m.service, m.vantage, result.verdict.value)] += 1

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Current verdicts from the store, for keys that are still configured."""
        wanted = self._wanted
        for row in rows:
            key = (str(row["service"]), str(row["target"]), str(row["vantage"]))
            if key in wanted and row.get("verdict") in Verdict.__members__.values():
                self.entries[key] = Entry(
                    *key,
                    str(row["verdict"]),
                    str(row.get("reason", "")),
                    str(row["since"]),
                    str(row.get("time") or row["since"]),
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


# --- the async driver ------------------------------------------------------------------


class Measurer(Protocol):
    """What the driver needs of :class:`probes.runner.Runner` (tests pass a fake)."""

    async def measure(self, job: Job) -> Measurement: ...

    def judge(self, obs: Measurement, observations: Observations) -> Result: ...

    async def aclose(self) -> None: ...


MeasurerFactory = Callable[[Config], Measurer]


#: Measurements one vantage may have in flight at most, however large the config.
MAX_PER_VANTAGE = 256
#: Measurements in flight at most, in all.
MAX_IN_FLIGHT = 512
#: How much more room than the worst case of a round (every target using its whole
#: budget) the bounds leave, for re-probes and jitter.
BOUND_HEADROOM = 1.5
#: File descriptors one measurement may hold at once (DNS, TCP/TLS, an HTTP connection, spare).
_FDS_PER_MEASUREMENT = 4


def runner_bounds(config: Config, *, fd_limit: int | None = None) -> tuple[int, int]:
    """(in flight in all, in flight per vantage) for a config, sized at start or reload.

    A measurement holds its place for up to the timeout (a black-holed target
    holds it for all of it), and a vantage has ``targets`` measurements to start
    per interval, so ``targets x timeout / interval`` places per vantage keep a
    round on time even if every target were black-holed. More than that only
    queues CPU work: the bounds are capped, and by the file descriptors the
    process may open.
    """
    from probes.runner import DEFAULT_CONCURRENCY, DEFAULT_PER_VANTAGE

    d = config.defaults
    targets = len(config.canaries) + sum(len(s.targets) for s in config.services)
    worst = targets * min(d.timeout, d.interval) / d.interval
    per_vantage = min(MAX_PER_VANTAGE, max(DEFAULT_PER_VANTAGE, math.ceil(worst * BOUND_HEADROOM)))
    limit = _fd_limit() if fd_limit is None else fd_limit
    by_fds = max(DEFAULT_CONCURRENCY, (limit - 256) // _FDS_PER_MEASUREMENT)
    total = min(MAX_IN_FLIGHT, by_fds, max(DEFAULT_CONCURRENCY, per_vantage * len(config.vantages)))
    return total, min(per_vantage, total)


def _fd_limit() -> int:
    """The soft limit on open files (unknown: the common default of 1024)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def _probe_runner(config: Config, pool: MeasuringPool | None = None) -> Measurer:
    """The runner behind /probe: the runner's default bounds, not shared with the schedule."""
    from probes.runner import Runner

    return Runner(config, pool=pool)


def _runner(config: Config, pool: MeasuringPool | None = None) -> Measurer:
    from probes.runner import Runner

    total, per_vantage = runner_bounds(config)
    return Runner(config, concurrency=total, per_vantage=per_vantage, pool=pool)


class Monitor:
    """Runs the schedule: measures, judges, confirms, publishes, persists."""

    def __init__(
        self,
        config: Config,
        *,
        store: AsyncStore | None = None,
        log: ProbeLog | None = None,
        measurer: MeasurerFactory = _runner,
        probe_measurer: MeasurerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        pool: MeasuringPool | None = None,
    ) -> None:
        """``probe_measurer`` measures for /probe, within bounds of its own so that
        on-demand probes and the schedule do not take each other's places; by
        default a runner of its own when ``measurer`` is the default, else ``measurer``.
        ``pool``: the default runners measure in these worker processes (``--workers``)."""
        from probes.runner import Observations

        self.board = Board(config)
        if pool is not None:
            self.board.workers = lambda: (pool.size, len(pool.pids()), pool.restarts)
        if log is not None:
            self.board.log_failures = lambda: log.lost_writes
        self._store = store
        self._log = log
        if probe_measurer is None and measurer is _runner:
            probe_measurer = _probe_runner
        if pool is not None:
            if measurer is _runner:
                measurer = functools.partial(_runner, pool=pool)
            if probe_measurer is _probe_runner:
                probe_measurer = functools.partial(_probe_runner, pool=pool)
        self._factory = measurer
        self._measurer = measurer(config)
        self._probe_factory = probe_measurer
        self._probe_measurer = self._measurer if probe_measurer is None else probe_measurer(config)
        self._clock = clock
        self._rng = rng or random.Random()
        self._observations = Observations(())
        self._confirm = Confirmation()
        self._policy = self._new_policy(config)
        self._skipped_before = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._slots: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._store_failing = False  # warn once per run of failed store writes, not per batch
        self._batch: list[dict[str, Any]] = []  # records waiting for the store's next transaction
        self._flush_now = asyncio.Event()
        self._canaries_out: Counter[str] = Counter()  # canary measurements in flight, per vantage
        self._canaries_idle: dict[str, asyncio.Event] = {}
        self._writer: asyncio.Task[None] | None = None

    @property
    def config(self) -> Config:
        return self.board.config

    @property
    def store(self) -> AsyncStore | None:
        return self._store

    @property
    def measurer(self) -> Measurer:
        return self._measurer

    @property
    def observations(self) -> Observations:
        return self._observations

    def _canary_out(self, vantage: str, step: int) -> None:
        """Count a vantage's canary measurements in flight; 0 sets its event."""
        self._canaries_out[vantage] += step
        event = self._canaries_idle.setdefault(vantage, asyncio.Event())
        if self._canaries_out[vantage] > 0:
            event.clear()
        else:
            event.set()

    async def _canaries_in(self, *vantages: str | None) -> None:
        """Wait (at most one measurement budget) for canaries of these vantages in flight.

        A measurement is judged against the latest canaries of its vantage (and the
        control's): a canary being measured at the same moment is that latest one.
        Without the wait, a target that failed a little sooner than the canaries of
        a vantage that is down would be called blocked (in the first round, say).
        """
        for vantage in vantages:
            if vantage is None or self._canaries_out[vantage] <= 0:
                continue
            await _wait(self._canaries_idle[vantage], self.config.defaults.timeout + 1.0)

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        self._slots.discard(task)
        self._wake.set()

    def _new_policy(self, config: Config) -> SchedulePolicy:
        # Slots started at once: twice what the runner's bounds can measure together.
        # When measuring falls behind, the rest wait in the policy's heap (a few bytes
        # each), not as tasks queued on the bounds (~10 KB each with their closures);
        # they start late, which the lateness metric shows, and missed rounds are skipped.
        total, _ = runner_bounds(config)
        self._room = max(1, 2 * total // max(1, len(config.vantages)))
        return SchedulePolicy(
            slots_for(config), config.defaults.interval, start=self._clock(), rng=self._rng
        )

    async def start(self) -> None:
        """Restore the published verdicts from the store, then start measuring."""
        if self._store is not None:
            try:
                self.board.restore(await self._store.current())
            except Exception as exc:  # a damaged store must not keep the exporter down
                _warn(f"could not restore verdicts from the store: {exc}")
        self._confirm = Confirmation({k: e.verdict for k, e in self.board.entries.items()})
        loop = asyncio.get_running_loop()
        self.board.tasks = lambda: len(asyncio.all_tasks(loop))
        self._loop_task = asyncio.create_task(self._loop(), name="lifeline-scheduler")
        if self._store is not None:
            self._writer = asyncio.create_task(self._write_loop(), name="lifeline-store-writer")

    async def _loop(self) -> None:
        while True:
            room = self._room - len(self._slots)
            for slot, jobs, due in self._policy.due_at(self._clock(), limit=max(0, room)):
                task = asyncio.create_task(
                    self.measure_slot(slot, jobs, policy=self._policy, due=due)
                )
                self._slots.add(task)
                task.add_done_callback(self._slot_done)
            self.board.skipped = self._skipped_before + self._policy.skipped
            if len(self._slots) >= self._room:
                delay = 3600.0  # woken by the next slot that finishes
            else:
                delay = max(0.0, self._policy.next_due() - self._clock())
            self._wake.clear()
            await _wait(self._wake, min(delay, 3600.0))

    async def measure_slot(
        self,
        slot: Slot,
        jobs: Sequence[Job] | None = None,
        *,
        policy: SchedulePolicy | None = None,
        due: float | None = None,
    ) -> None:
        """Measure a slot's jobs; each is judged as soon as it and the control are in.

        A changed verdict is re-probed (that vantage and the control) before it
        is published; one slow vantage does not hold the others' verdicts back.
        ``due`` (the policy's clock) is when the slot came round: how much later
        each measurement really started is the lateness metric.
        """
        jobs = tuple(slot.jobs if jobs is None else jobs)
        control = self.config.control
        ctl_name = control.name if control is not None else None
        control_in = asyncio.Event()
        if all(j.vantage.name != ctl_name for j in jobs):
            control_in.set()  # judge against the control's latest observation

        async def one(job: Job) -> None:
            canary = job.service == CANARY_SERVICE
            if canary:
                self._canary_out(job.vantage.name, +1)
            try:
                try:
                    m = await self._measurer.measure(job)
                    self._observations.add(m)
                    if due is not None and policy is not None:
                        started = self._clock() - m.duration_s
                        self.board.lateness.observe(started - due, interval=policy.interval)
                finally:
                    if canary:
                        self._canary_out(job.vantage.name, -1)
                    if job.vantage.name == ctl_name:
                        control_in.set()
                await control_in.wait()
                if not canary:
                    await self._canaries_in(job.vantage.name, ctl_name)
                await self._settle(self._record(m), job, slot)
            finally:
                if policy is not None:
                    policy.finished(job)
                    if policy is self._policy and policy.complete:
                        self.board.ready = True

        outcomes = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, Exception):  # one broken measurement must not stop the rest
                _warn(f"measuring {job.target.url} from {job.vantage.name} failed: {outcome!r}")
            elif isinstance(outcome, BaseException):
                raise outcome

    def _record(self, m: Measurement) -> tuple[Result, dict[str, Any]]:
        """Judge a measurement against the rolling observations; count and log it.

        The record (``Result.to_dict()``) is made once, for the log and the store.
        """
        r = self._measurer.judge(m, self._observations)
        self.board.count(r)
        record = EncodedRecord(r.to_dict())  # its JSON made once, for the log and the store
        if self._log is not None:
            self._log.write(record)
        return r, record

    async def _settle(self, judged: tuple[Result, dict[str, Any]], job: Job, slot: Slot) -> None:
        """Publish a result, or re-probe first when its verdict changed."""
        result, record = judged
        if self._confirm.offer(result) is Decision.PUBLISH:
            await self._publish([(result, record)])
            return
        first_record = record
        control = self.config.control
        again = [job]
        if control is not None and job.vantage.name != control.name:
            again += [j for j in slot.jobs if j.vantage.name == control.name]
        measurements = await asyncio.gather(*(self._measurer.measure(j) for j in again))
        for m in measurements:
            self._observations.add(m)
        fresh = self._record(measurements[0])
        for m in measurements[1:]:  # the control's re-probe: evidence, counted and logged
            self._record(m)
        records = {id(result): first_record, id(fresh[0]): fresh[1]}
        settled = self._confirm.settle(fresh[0])
        await self._publish([(r, records.get(id(r)) or r.to_dict()) for r in settled])

    async def _publish(self, results: list[tuple[Result, dict[str, Any]]]) -> None:
        """Show results on the board; queue their records for the store's next batch."""
        for r, _ in results:
            self.board.publish(r)
        if self._store is None or not results:
            return
        self._batch.extend(record for _, record in results)
        if self._writer is None:  # not started (tests drive slots by hand): write now
            await self._flush()
        elif len(self._batch) >= STORE_BATCH:
            self._flush_now.set()

    async def _write_loop(self) -> None:
        """Write the queued records every STORE_FLUSH_S, or sooner when a batch is full."""
        while True:
            await _wait(self._flush_now, STORE_FLUSH_S)
            self._flush_now.clear()
            await self._flush()

    async def _flush(self) -> None:
        """One transaction for everything queued; a failure is counted once per batch."""
        batch, self._batch = self._batch, []
        if self._store is None or not batch:
            return
        try:
            await self._store.add_records(batch)
        except Exception as exc:  # counted and shown once per run; measuring goes on
            self.board.store_failures += 1
            if not self._store_failing:
                self._store_failing = True
                _warn(
                    f"store write failed: {exc}; measuring goes on, failed batches are "
                    "counted (lifeline_store_write_failures_total), their records still "
                    "go to the probe log"
                )
            return
        if self._store_failing:
            self._store_failing = False
            _warn(f"store writes work again ({self.board.store_failures} batches failed so far)")

    async def probe(self, target: Target, vantage: Vantage, service: str) -> Result:
        """One measurement now (for /probe), judged with the latest scheduled control and canaries.

        It is not published: /probe answers a question, it does not change the board.
        """
        from probes.runner import Job, Observations

        measurer = self._probe_measurer
        m = await measurer.measure(Job(service, target, vantage))
        context: list[Measurement] = []
        control = self.config.control
        if control is not None and control.name != vantage.name:
            ctl = self._observations.get(service, target.url, control.name)
            if ctl is not None:
                context.append(ctl)
            context += self._observations.canaries.get(control.name, [])
        context += self._observations.canaries.get(vantage.name, [])
        # added last, the fresh measurement replaces a scheduled one of the same key
        return measurer.judge(m, Observations([*context, m]))

    async def reload(self, config: Config) -> None:
        """Switch to a new config: the old in-flight slots finish, then measuring goes on."""
        from probes.runner import Observations

        old_measurer, old_tasks = self._measurer, set(self._slots)
        old_probe = self._probe_measurer
        self._skipped_before += self._policy.skipped
        self.board.retarget(config)
        keys = set(self.board.keys())
        self._confirm.retain(keys)
        self._observations = Observations(
            m for k, m in self._observations.by_key.items() if k in keys
        )
        self._measurer = self._factory(config)
        probe = self._probe_factory
        self._probe_measurer = self._measurer if probe is None else probe(config)
        self._policy = self._new_policy(config)
        self.board.reload_ok, self.board.reload_time = True, time.time()
        self._wake.set()
        await self._drain(old_tasks, bound=config.defaults.timeout)
        await old_measurer.aclose()
        if old_probe is not old_measurer:
            await old_probe.aclose()

    async def _drain(self, tasks: set[asyncio.Task[None]], *, bound: float) -> None:
        """Let tasks finish within a bound, then cancel what is left."""
        if not tasks:
            return
        # a slot may re-probe after measuring: two measurement budgets, plus a margin
        _, pending = await asyncio.wait(tasks, timeout=2 * bound + 1.0)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)

    async def aclose(self) -> None:
        """Stop scheduling, let in-flight measurements end (bounded), close the measurer."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        await self._drain(set(self._slots), bound=self.config.defaults.timeout)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._flush()  # what the last slots published
        await self._measurer.aclose()
        if self._probe_measurer is not self._measurer:
            await self._probe_measurer.aclose()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait at most ``seconds`` for ``event``; whether it is set.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
    arrives just as the awaited event is set, and a loop around it (the
    scheduler's, the store writer's) then never ends, nor does ``serve``'s stop.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


def _warn(text: str) -> None:
    print(f"lifeline serve: {text}", file=sys.stderr, flush=True)

"""The schedule's pure policy: when `lifeline serve` measures what; no I/O, no clock.

- :class:`SchedulePolicy`: every target is one *slot* (all of its vantages
  together, so the control's observation is taken close in time to the
  others'); slots are spread over the interval with a little jitter, so the
  start is no thundering herd; a slot still running when it is due again is
  skipped and counted, so no backlog can grow.
- :class:`Confirmation`: a verdict that differs from the published one is
  held back until an immediate re-probe (of that vantage and the control)
  says the same, so one lost packet pages nobody.
- :class:`Lateness`: how late each scheduled measurement started.

The async driver that feeds them is :class:`exporter.scheduler.Monitor` (STYLE #6).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from probes.measurer import Job
from probes.model import CANARY_SERVICE, Config, Target
from probes.records import Result

__all__ = [
    "LATENESS_BUCKETS",
    "Confirmation",
    "Decision",
    "Key",
    "Lateness",
    "SchedulePolicy",
    "Slot",
    "slots_for",
]

Key = tuple[str, str, str]  # (service, target URL, vantage)


#: Share of a slot's spacing used for random jitter: slots stay in order but
#: two daemons started together do not probe in lockstep.
JITTER_FRACTION = 0.5


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

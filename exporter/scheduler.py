"""The async driver of `lifeline serve`: measures on the schedule, publishes, persists.

:class:`Monitor` awaits the measurements of its :class:`JobRunner` and feeds
the pure policies (:mod:`exporter.schedule`), the published board
(:mod:`exporter.board`), the store (which batches its own writes) and the
probe log. The names of those modules stay importable from here.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from exporter import events
from exporter.asyncstore import wait_at_most as _wait
from exporter.board import Board, Entry
from exporter.schedule import (
    LATENESS_BUCKETS,
    Confirmation,
    Decision,
    Key,
    Lateness,
    SchedulePolicy,
    Slot,
    slots_for,
)
from exporter.transitions import AgentWatch, IncidentLog
from probes import timefmt
from probes.model import CANARY_SERVICE, Config, Target, Vantage
from probes.records import EncodedRecord, Measurement, Result

if TYPE_CHECKING:
    from exporter.asyncstore import AsyncStore
    from exporter.logs import ProbeLog
    from probes.runner import Job, Observations
    from probes.workers import MeasuringPool

__all__ = [
    "LATENESS_BUCKETS",
    "MAX_IN_FLIGHT",
    "MAX_PER_VANTAGE",
    "Board",
    "Confirmation",
    "Decision",
    "Entry",
    "JobRunner",
    "Key",
    "Lateness",
    "Monitor",
    "RunnerFactory",
    "SchedulePolicy",
    "Slot",
    "epoch",
    "rfc3339",
    "runner_bounds",
    "slots_for",
]


def rfc3339(ts: float) -> str:
    """An epoch time as RFC 3339 UTC with microseconds (the records' format: probes.timefmt)."""
    return timefmt.rfc3339(ts)


def epoch(text: str) -> float:
    """An RFC 3339 time as epoch seconds (naive times are taken as UTC)."""
    return timefmt.parse_rfc3339(text)


# --- the async driver ------------------------------------------------------------------


class JobRunner(Protocol):
    """What the driver needs of :class:`probes.runner.Runner` (tests pass a fake).

    ``measure`` measures within the config's budget through the runner's one
    :class:`~probes.measurer.Measurer`. ``aclose`` may be called twice: the
    /probe runner may be the schedule's.
    """

    async def measure(self, job: Job) -> Measurement: ...

    def judge(self, obs: Measurement, observations: Observations) -> Result: ...

    async def aclose(self) -> None: ...


RunnerFactory = Callable[[Config], JobRunner]
#: Makes the (schedule's, /probe's) runners of a config; chosen once, by the Monitor.
_RunnersFactory = Callable[[Config], tuple[JobRunner, JobRunner]]


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


#: ``/probe``'s own bounds, in all and per vantage: wide, since each place is mostly
#: waiting (a DNS listening window, a far target's round trips) and the scrapers decide
#: how many they ask at once, as with blackbox_exporter; within the open-files limit.
PROBE_IN_FLIGHT = 256
PROBE_PER_VANTAGE = 128


def probe_bounds(*, fd_limit: int | None = None) -> tuple[int, int]:
    """(in flight in all, in flight per vantage) for the /probe runner of one process."""
    from probes.runner import DEFAULT_CONCURRENCY

    limit = _fd_limit() if fd_limit is None else fd_limit
    # half the open files: the schedule's runner, in the same process, needs the rest
    by_fds = max(DEFAULT_CONCURRENCY, (limit - 256) // (2 * _FDS_PER_MEASUREMENT))
    total = min(PROBE_IN_FLIGHT, by_fds)
    return total, min(PROBE_PER_VANTAGE, total)


def _fd_limit() -> int:
    """The soft limit on open files (unknown: the common default of 1024)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def default_runners(pool: MeasuringPool | None = None) -> _RunnersFactory:
    """The runners `serve` uses: the schedule's sized by :func:`runner_bounds`, and one for
    /probe with :func:`probe_bounds`, not shared with the schedule; both measure
    local vantages in ``pool``'s workers when there is one (``--workers``)."""
    from probes.runner import Runner

    def runners(config: Config) -> tuple[JobRunner, JobRunner]:
        total, per_vantage = runner_bounds(config)
        scheduled = Runner(config, concurrency=total, per_vantage=per_vantage, pool=pool)
        probe_total, probe_per_vantage = probe_bounds()
        probing = Runner(config, concurrency=probe_total, per_vantage=probe_per_vantage, pool=pool)
        return scheduled, probing

    return runners


def _runners(runner: RunnerFactory, probe_runner: RunnerFactory | None) -> _RunnersFactory:
    """Given runners: /probe measures with ``probe_runner``'s, else the schedule's."""

    def runners(config: Config) -> tuple[JobRunner, JobRunner]:
        scheduled = runner(config)
        return scheduled, scheduled if probe_runner is None else probe_runner(config)

    return runners


class Monitor:
    """Runs the schedule: measures, judges, confirms, publishes, persists."""

    def __init__(
        self,
        config: Config,
        *,
        store: AsyncStore | None = None,
        log: ProbeLog | None = None,
        runner: RunnerFactory | None = None,
        probe_runner: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        pool: MeasuringPool | None = None,
    ) -> None:
        """``probe_runner`` measures for /probe, within bounds of its own so that
        on-demand probes and the schedule do not take each other's places; by
        default a runner of its own when ``runner`` is the default, else ``runner``.
        ``pool``: the default runners measure in these worker processes (``--workers``)."""
        from probes.runner import Observations

        self.board = Board(config)
        if pool is not None:
            self.board.workers = lambda: (pool.size, len(pool.pids()), pool.restarts)
        if log is not None:
            self.board.log_failures = lambda: log.lost_writes
        if store is not None:
            self.board.store_writes_failed = lambda: store.write_failures
        self._store = store
        self._log = log
        self._pool = pool
        self._factory = default_runners(pool) if runner is None else _runners(runner, probe_runner)
        self._runner, self._probe_runner = self._factory(config)
        self._keep_fingerprints(config)
        self._clock = clock
        self._rng = rng or random.Random()
        self._observations = Observations(())
        self._confirm = Confirmation()
        self._policy = self._new_policy(config)
        self._skipped_before = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._slots: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._canaries_out: Counter[str] = Counter()  # canary measurements in flight, per vantage
        self._canaries_idle: dict[str, asyncio.Event] = {}
        self._incidents = IncidentLog()  # incident start / end lines (exporter.events)
        self._agents = AgentWatch(clock)  # agent lost / recovered lines

    @property
    def config(self) -> Config:
        return self.board.config

    @property
    def store(self) -> AsyncStore | None:
        return self._store

    @property
    def runner(self) -> JobRunner:
        return self._runner

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
                self.board.restore(await self._store.latest())
            except Exception as exc:  # a damaged store must not keep the exporter down
                events.restore_failed(str(exc))
        self._incidents.seed(self.board.entries.values())
        self._confirm = Confirmation({k: e.verdict for k, e in self.board.entries.items()})
        loop = asyncio.get_running_loop()
        self.board.tasks = lambda: len(asyncio.all_tasks(loop))
        self._loop_task = asyncio.create_task(self._loop(), name="lifeline-scheduler")
        if self._store is not None:
            self._store.start_writing()  # batches by size and time from now on

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
                    m = await self._runner.measure(job)
                    self._observed(m, job)
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
                events.measure_failed(job.target.url, job.vantage.name, repr(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome

    def _observed(self, m: Measurement, job: Job) -> None:
        """A measurement came back: the latest observation of its key; an agent's health."""
        self._observations.add(m)
        self._agents.measured(m, job.vantage)

    def _record(self, m: Measurement) -> tuple[Result, dict[str, Any]]:
        """Judge a measurement against the rolling observations; count and log it.

        The record (``Result.to_dict()``) is made once, for the log and the store.
        """
        r = self._runner.judge(m, self._observations)
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
        measurements = await asyncio.gather(*(self._runner.measure(j) for j in again))
        for m, j in zip(measurements, again, strict=True):
            self._observed(m, j)
        fresh = self._record(measurements[0])
        for m in measurements[1:]:  # the control's re-probe: evidence, counted and logged
            self._record(m)
        records = {id(result): first_record, id(fresh[0]): fresh[1]}
        settled = self._confirm.settle(fresh[0])
        await self._publish([(r, records.get(id(r)) or r.to_dict()) for r in settled])

    async def _publish(self, results: list[tuple[Result, dict[str, Any]]]) -> None:
        """Show results on the board; hand their records to the store (it batches them)."""
        entries = self.board.entries
        for r, _ in results:
            m = r.measurement
            key = (m.service, m.target, m.vantage)
            before = entries.get(key)
            self.board.publish(r)
            after = entries.get(key)
            if after is not None and (before is None or before.verdict != after.verdict):
                self._incidents.changed(after)
        if self._store is not None and results:
            await self._store.put([record for _, record in results])

    async def probe(self, target: Target, vantage: Vantage, service: str) -> Result:
        """One measurement now (for /probe), judged with the latest scheduled control and canaries.

        It is not published: /probe answers a question, it does not change the board.
        """
        from probes.runner import Job, Observations

        runner = self._probe_runner
        m = await runner.measure(Job(service, target, vantage))
        context = self.probe_context(service, target.url, vantage.name)
        # added last, the fresh measurement replaces a scheduled one of the same key
        return runner.judge(m, Observations([*context, m]))

    def probe_context(self, service: str, target: str, vantage: str) -> list[Measurement]:
        """What a /probe of (service, target) at a vantage is judged with: the control's
        latest scheduled measurement of it and the latest canaries (the control's, the
        vantage's). Also asked for by the processes that answer /probe (exporter.coreworker)."""
        context: list[Measurement] = []
        control = self.config.control
        if control is not None and control.name != vantage:
            ctl = self._observations.get(service, target, control.name)
            if ctl is not None:
                context.append(ctl)
            context += self._observations.canaries.get(control.name, [])
        context += self._observations.canaries.get(vantage, [])
        return context

    def _keep_fingerprints(self, config: Config) -> None:
        """The config's fingerprints beside the log, so the log re-judges without it."""
        if self._log is None:
            return
        from exporter.judgefile import write_fingerprints

        try:
            write_fingerprints(self._log.directory, config.fingerprints)
        except OSError:
            self._log.lost_writes += 1  # shown as the log's lost writes, like a lost line

    async def reload(self, config: Config) -> None:
        """Switch to a new config: the old in-flight slots finish, then measuring goes on."""
        from probes.runner import Observations

        old_runners, old_tasks = (self._runner, self._probe_runner), set(self._slots)
        self._skipped_before += self._policy.skipped
        self.board.retarget(config)
        keys = set(self.board.keys())
        self._confirm.retain(keys)
        self._incidents.retain(keys)
        self._observations = Observations(
            m for k, m in self._observations.by_key.items() if k in keys
        )
        self._runner, self._probe_runner = self._factory(config)
        self._keep_fingerprints(config)
        self._policy = self._new_policy(config)
        if self._pool is not None:  # the processes answering /probe switch too
            self._pool.broadcast(("config", config))
        self.board.reload_ok, self.board.reload_time = True, time.time()
        self._wake.set()
        await self._drain(old_tasks, bound=config.defaults.timeout)
        for old in old_runners:
            await old.aclose()

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
        """Stop scheduling, let in-flight measurements end (bounded), close the runners."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        await self._drain(set(self._slots), bound=self.config.defaults.timeout)
        if self._store is not None:
            await self._store.stop_writing()  # writes what the last slots published
        await self._runner.aclose()
        await self._probe_runner.aclose()

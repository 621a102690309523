"""Measure (target, vantage) pairs and judge them against the control.

Data flows one way: config -> :class:`Runner` -> :func:`probes.measure.measure`
-> observations -> :func:`judge` -> results. ``judge`` is pure: it only picks,
for each observation, the control's observation of the same target and the
canaries of the vantages involved, then calls the classifier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from probes import __version__
from probes.classify import classify
from probes.fingerprints import FingerprintSet
from probes.measure import measure
from probes.model import CANARY_SERVICE, Config, Target, Vantage
from probes.net import VantageNet
from probes.records import Measurement, Result
from probes.remote import RemoteAgents
from probes.workers import MeasuringPool

__all__ = ["Job", "Observations", "Runner", "jobs_for", "judge"]

#: Measurements in flight at once, in all, and per vantage (a slow proxy must
#: not starve the other vantages).
DEFAULT_CONCURRENCY = 64
DEFAULT_PER_VANTAGE = 24


@dataclass(frozen=True, slots=True)
class Job:
    """One (service, target, vantage) to measure."""

    service: str
    target: Target
    vantage: Vantage
    #: (service, target URL, vantage name), made once: the scheduler asks for it
    #: several times per measurement, for every job of the config.
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.service, self.target.url, self.vantage.name))


def jobs_for(
    config: Config, *, services: Sequence[str] = (), vantages: Sequence[str] = ()
) -> list[Job]:
    """Every job of a round, canaries included.

    Filters select what is reported; what the judgement needs (the control's
    measurement of each selected target, each selected vantage's canaries) is
    measured as well, so the verdicts do not change with the filters.
    """
    chosen_v = [v for v in config.vantages if not vantages or v.name in vantages]
    control = config.control
    measure_v = list(chosen_v)
    if control is not None and control not in measure_v:
        measure_v.append(control)
    jobs: list[Job] = []
    for v in measure_v:
        for t in config.canaries:
            jobs.append(Job(CANARY_SERVICE, t, v))
        for s in config.services:
            if services and s.name not in services:
                continue
            for t in s.targets:
                jobs.append(Job(s.name, t, v))
    return jobs


class Observations:
    """The measurements of one round, indexed for judging."""

    def __init__(self, measurements: Iterable[Measurement]) -> None:
        self.by_key: dict[tuple[str, str, str], Measurement] = {}
        self.by_target: dict[tuple[str, str], list[Measurement]] = {}
        self.canaries: dict[str, list[Measurement]] = {}
        for m in measurements:
            self.add(m)

    def add(self, m: Measurement) -> None:
        key = (m.service, m.target, m.vantage)
        old = self.by_key.get(key)
        self.by_key[key] = m
        peers = self.by_target.setdefault((m.service, m.target), [])
        if old is not None:
            peers.remove(old)
        peers.append(m)
        if m.service == CANARY_SERVICE:
            canaries = self.canaries.setdefault(m.vantage, [])
            canaries[:] = [c for c in canaries if c.target != m.target] + [m]

    def get(self, service: str, target: str, vantage: str) -> Measurement | None:
        return self.by_key.get((service, target, vantage))


def judge(
    obs: Measurement,
    observations: Observations,
    *,
    control: str | None,
    fingerprints: FingerprintSet,
    throttle_ratio: float,
) -> Result:
    """Classify one observation against the round's control and canaries (pure)."""
    is_control = control is not None and obs.vantage == control
    ctl = None
    control_canaries: Sequence[Measurement] = ()
    if control is not None and not is_control:
        ctl = observations.get(obs.service, obs.target, control)
        control_canaries = observations.canaries.get(control, [])
    peers = [
        m
        for m in observations.by_target.get((obs.service, obs.target), [])
        if m.vantage != obs.vantage and m.vantage != control
    ]
    j = classify(
        obs,
        control=ctl,
        canaries=observations.canaries.get(obs.vantage, []),
        fingerprints=fingerprints,
        throttle_ratio=throttle_ratio,
        is_control=is_control,
        control_canaries=control_canaries,
        peers=peers,
    )
    return Result(obs, j.verdict, j.reason, control=ctl, version=__version__)


ProgressFn = Callable[[int, int], None]


class Runner:
    """Measures jobs of one config with bounded concurrency; owns the vantages' networks."""

    def __init__(
        self,
        config: Config,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_vantage: int = DEFAULT_PER_VANTAGE,
        pool: MeasuringPool | None = None,
    ) -> None:
        """``pool``: measure local vantages in worker processes (``serve --workers``);
        the runner does not own it and does not close it."""
        self.config = config
        self._pool = pool
        self.fingerprints = FingerprintSet.build(config.fingerprints)
        self._stop = self.fingerprints.injected_addresses()
        self._nets: dict[str, VantageNet] = {}
        self._all = asyncio.Semaphore(concurrency)
        self._per_vantage = per_vantage
        self._vantage_sem: dict[str, asyncio.Semaphore] = {}
        self._timeout = config.defaults.timeout
        self._max_body = config.defaults.max_body_bytes
        self._agents = RemoteAgents(per_agent=per_vantage)  # vantages with `agent:`

    def _net(self, vantage: Vantage) -> VantageNet:
        net = self._nets.get(vantage.name)
        if net is None:
            net = VantageNet(vantage, ca_file=self.config.defaults.ca_file)
            self._nets[vantage.name] = net
        return net

    def _bound(self, vantage: str) -> asyncio.Semaphore:
        """The vantage's own bound, made once (not one throw-away Semaphore per call)."""
        sem = self._vantage_sem.get(vantage)
        if sem is None:
            sem = self._vantage_sem[vantage] = asyncio.Semaphore(self._per_vantage)
        return sem

    async def measure(self, job: Job) -> Measurement:
        """One measurement, within the global and per-vantage bounds."""
        vantage = job.vantage
        async with self._all, self._bound(vantage.name):
            if vantage.agent is not None:  # measured by a remote agent (docs/agents.md)
                return await self._agents.measure(
                    job.target, vantage, timeout=self._timeout,
                    max_body_bytes=self._max_body, service=job.service,
                )  # fmt: skip
            if self._pool is not None:
                return await self._pool.measure(
                    job.target, vantage, ca_file=self.config.defaults.ca_file,
                    timeout=self._timeout, max_body_bytes=self._max_body,
                    service=job.service, stop_addresses=self._stop,
                )  # fmt: skip
            return await measure(
                job.target,
                vantage,
                self._net(vantage),
                timeout=self._timeout,
                max_body_bytes=self._max_body,
                service=job.service,
                stop_addresses=self._stop,
            )

    async def run_round(
        self,
        *,
        services: Sequence[str] = (),
        vantages: Sequence[str] = (),
        progress: ProgressFn | None = None,
    ) -> list[Result]:
        """Measure every selected (target, vantage) once and judge each.

        Returns the results of the selected vantages (the control's own
        results only when it is selected), canaries included, in config order.
        """
        jobs = jobs_for(self.config, services=services, vantages=vantages)
        done = 0

        async def one(job: Job) -> Measurement:
            nonlocal done
            m = await self.measure(job)
            done += 1
            if progress is not None:
                progress(done, len(jobs))
            return m

        measurements = await asyncio.gather(*(one(j) for j in jobs))
        observations = Observations(measurements)
        wanted = set(vantages)
        return [
            self.judge(m, observations) for m in measurements if not wanted or m.vantage in wanted
        ]

    def judge(self, obs: Measurement, observations: Observations) -> Result:
        control = self.config.control
        return judge(
            obs,
            observations,
            control=control.name if control else None,
            fingerprints=self.fingerprints,
            throttle_ratio=self.config.defaults.throttle_ratio,
        )

    async def aclose(self) -> None:
        await self._agents.aclose()
        nets, self._nets = list(self._nets.values()), {}
        for net in nets:
            await net.aclose()

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

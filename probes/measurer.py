"""One way to have a job measured, whoever measures it.

A :class:`Measurer` turns a :class:`Job` into a :class:`~probes.records.Measurement`
within a budget of seconds, and never raises (cancellation aside). Three kinds do it:

- :class:`LocalMeasurer`: in this process, with one :class:`~probes.net.VantageNet` per vantage;
- :class:`PoolMeasurer`: in the worker processes of a :class:`~probes.workers.MeasuringPool`
  (``serve --workers``);
- :class:`AgentMeasurer`: by the remote agent of a vantage with ``agent:``
  (:class:`~probes.remote.RemoteAgents`).

:class:`ByVantage` sends each vantage to one of them, decided once per vantage;
:class:`Bounded` adds the global and per-vantage concurrency bounds. The runner
and the scheduler hold one measurer built by :func:`measurer_for` and never ask
which kind it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from probes.defaults import DEFAULT_BODY_HEAD_BYTES
from probes.fingerprints import FingerprintSet
from probes.measure import measure
from probes.model import Config, Target, Vantage
from probes.net import VantageNet
from probes.records import Measurement
from probes.remote import RemoteAgents
from probes.workers import MeasuringPool

__all__ = [
    "AgentMeasurer",
    "Bounded",
    "ByVantage",
    "Job",
    "LocalMeasurer",
    "Measurer",
    "PoolMeasurer",
    "measurer_for",
]


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


class Measurer(Protocol):
    """Measures one job within ``timeout`` seconds; never raises (cancellation aside)."""

    async def measure(self, job: Job, timeout: float) -> Measurement: ...  # noqa: ASYNC109

    async def aclose(self) -> None:
        """Release what it holds; calling it again does nothing."""
        ...


class LocalMeasurer:
    """Measures in this process; owns one network per vantage, made on first use."""

    def __init__(
        self,
        *,
        ca_file: str | None,
        max_body_bytes: int,
        stop_addresses: frozenset[str],
        fingerprints: FingerprintSet | None = None,
        body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES,
    ) -> None:
        self._ca_file = ca_file
        self._max_body = max_body_bytes
        self._stop = stop_addresses
        self._fingerprints = fingerprints
        self._head = body_head_bytes
        self._nets: dict[str, VantageNet] = {}

    def _net(self, vantage: Vantage) -> VantageNet:
        net = self._nets.get(vantage.name)
        if net is None:
            net = VantageNet(vantage, ca_file=self._ca_file)
            self._nets[vantage.name] = net
        return net

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        return await measure(
            job.target,
            job.vantage,
            self._net(job.vantage),
            timeout=timeout,
            max_body_bytes=self._max_body,
            service=job.service,
            stop_addresses=self._stop,
            fingerprints=self._fingerprints,
            body_head_bytes=self._head,
        )

    async def aclose(self) -> None:
        nets, self._nets = list(self._nets.values()), {}
        for net in nets:
            await net.aclose()


class PoolMeasurer:
    """Measures in a pool's worker processes; the pool is not its to close."""

    def __init__(
        self,
        pool: MeasuringPool,
        *,
        ca_file: str | None,
        max_body_bytes: int,
        stop_addresses: frozenset[str],
        fingerprints: FingerprintSet | None = None,
        body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES,
    ) -> None:
        self._pool = pool
        self._ca_file = ca_file
        self._max_body = max_body_bytes
        self._stop = stop_addresses
        self._fingerprints = fingerprints
        self._head = body_head_bytes

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        return await self._pool.measure(
            job.target, job.vantage, ca_file=self._ca_file, timeout=timeout,
            max_body_bytes=self._max_body, service=job.service, stop_addresses=self._stop,
            fingerprints=self._fingerprints, body_head_bytes=self._head,
        )  # fmt: skip

    async def aclose(self) -> None:
        return None  # whoever started the pool stops it (serve, after the monitor)


class AgentMeasurer:
    """Has a vantage's remote agent measure (docs/agents.md); owns the agents' sessions."""

    def __init__(self, agents: RemoteAgents, *, max_body_bytes: int) -> None:
        self._agents = agents
        self._max_body = max_body_bytes

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        return await self._agents.measure(
            job.target, job.vantage, timeout=timeout, max_body_bytes=self._max_body,
            service=job.service,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._agents.aclose()


class ByVantage:
    """Sends each vantage's jobs to the measurer ``choose`` names for it.

    The choice is made once per vantage: for the config's vantages when built,
    for any other vantage (a job made under an older config) when first met.
    """

    def __init__(
        self,
        vantages: Iterable[Vantage],
        choose: Callable[[Vantage], Measurer],
        measurers: Iterable[Measurer],
    ) -> None:
        self._choose = choose
        self._measurers = list(measurers)  # every measurer `choose` may name, to close them
        self._route: dict[str, Measurer] = {v.name: choose(v) for v in vantages}

    def _for(self, vantage: Vantage) -> Measurer:
        chosen = self._route.get(vantage.name)
        if chosen is None:
            chosen = self._route[vantage.name] = self._choose(vantage)
        return chosen

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        return await self._for(job.vantage).measure(job, timeout)

    async def aclose(self) -> None:
        for m in self._measurers:
            await m.aclose()


class Bounded:
    """Another measurer within bounds: in flight in all, and per vantage.

    A slow proxy must not starve the other vantages, so each vantage has a
    bound of its own besides the global one.
    """

    def __init__(self, inner: Measurer, *, concurrency: int, per_vantage: int) -> None:
        self._inner = inner
        self._all = asyncio.Semaphore(concurrency)
        self._per_vantage = per_vantage
        self._vantage_sem: dict[str, asyncio.Semaphore] = {}

    def _bound(self, vantage: str) -> asyncio.Semaphore:
        """The vantage's own bound, made once (not one throw-away Semaphore per call)."""
        sem = self._vantage_sem.get(vantage)
        if sem is None:
            sem = self._vantage_sem[vantage] = asyncio.Semaphore(self._per_vantage)
        return sem

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        async with self._all, self._bound(job.vantage.name):
            return await self._inner.measure(job, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()


def measurer_for(
    config: Config,
    *,
    concurrency: int,
    per_vantage: int,
    stop_addresses: frozenset[str],
    pool: MeasuringPool | None = None,
    fingerprints: FingerprintSet | None = None,
) -> Measurer:
    """The measurer of a config: agent vantages by their agents, the others in this
    process or, with ``pool``, in its workers; all within the bounds."""
    d = config.defaults
    agents = AgentMeasurer(RemoteAgents(per_agent=per_vantage), max_body_bytes=d.max_body_bytes)
    near: Measurer
    if pool is not None:
        near = PoolMeasurer(
            pool, ca_file=d.ca_file, max_body_bytes=d.max_body_bytes, stop_addresses=stop_addresses,
            fingerprints=fingerprints, body_head_bytes=d.body_head_bytes,
        )  # fmt: skip
    else:
        near = LocalMeasurer(
            ca_file=d.ca_file, max_body_bytes=d.max_body_bytes, stop_addresses=stop_addresses,
            fingerprints=fingerprints, body_head_bytes=d.body_head_bytes,
        )  # fmt: skip

    def choose(vantage: Vantage) -> Measurer:
        return agents if vantage.agent is not None else near

    routed = ByVantage(config.vantages, choose, (agents, near))
    return Bounded(routed, concurrency=concurrency, per_vantage=per_vantage)

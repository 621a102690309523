"""Measure (target, vantage) pairs and judge them against the control.

Data flows one way: config -> :class:`Runner` -> its :class:`~probes.measurer.Measurer`
-> observations -> :func:`judge` -> results. ``judge`` is pure: it only picks, for
each observation, the control's observation of the same target and the canaries
of the vantages involved, then calls the classifier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from probes import __version__
from probes.classify import classify
from probes.defaults import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY  # re-exported
from probes.defaults import DEFAULT_PER_VANTAGE as DEFAULT_PER_VANTAGE  # re-exported
from probes.fingerprints import FingerprintSet
from probes.judge import judged_with
from probes.measurer import Job, Measurer, measurer_for
from probes.model import CANARY_SERVICE, Config
from probes.records import DNSStage, HTTPStage, Measurement, Result, TLSStage
from probes.workers import MeasuringPool

__all__ = ["Job", "Observations", "Runner", "jobs_for", "judge"]

_S = TypeVar("_S", str, str | None)


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
    """The latest measurement of each (service, target, vantage), indexed for judging.

    The index keeps whole measurements (the control's are judged against and
    stored with each result). Of a target's measurements from several vantages,
    most of what is large is equal: the page head, the headers, the title, the
    DNS answers. So each string a measurement brings that equals the one another
    vantage's measurement of the same target holds is replaced by that very
    string (strings are immutable: nothing changes but the memory). On the
    benchmark's farm that is 5.3 -> 3.5 KB per measurement (the 2 KB page head
    was most of it), 50 MB less at 30,000 keys. The certificate chain and the
    certificate's fields are shared the same way.
    """

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
        if peers:
            _share(m, peers[-1])
        peers.append(m)
        if m.service == CANARY_SERVICE:
            canaries = self.canaries.setdefault(m.vantage, [])
            canaries[:] = [c for c in canaries if c.target != m.target] + [m]

    def get(self, service: str, target: str, vantage: str) -> Measurement | None:
        return self.by_key.get((service, target, vantage))


def _same(mine: _S, theirs: _S) -> _S:
    """``theirs`` when it is equal to ``mine`` (so that one copy is kept), else ``mine``."""
    return theirs if mine == theirs else mine


def _share(m: Measurement, peer: Measurement) -> None:
    """Point ``m``'s strings at the equal ones ``peer`` (same target, another vantage) holds."""
    dns, other = m.record(DNSStage), peer.record(DNSStage)
    if dns is not None and other is not None:
        dns.name = _same(dns.name, other.name)
        if dns.addresses == other.addresses:
            dns.addresses[:] = other.addresses
        for query, other_query in zip(dns.queries, other.queries, strict=False):
            query.rcode = _same(query.rcode, other_query.rcode)
            for answer, other_answer in zip(query.answers, other_query.answers, strict=False):
                answer.value = _same(answer.value, other_answer.value)
    tls, other_tls = m.record(TLSStage), peer.record(TLSStage)
    if tls is not None and other_tls is not None:
        tls.server_name = _same(tls.server_name, other_tls.server_name)
        tls.version = _same(tls.version, other_tls.version)
        tls.cipher = _same(tls.cipher, other_tls.cipher)
        tls.alpn = _same(tls.alpn, other_tls.alpn)
        if tls.chain == other_tls.chain:
            tls.chain[:] = other_tls.chain  # base64 DER, about 1-3 KB a certificate
        cert, other_cert = tls.certificate, other_tls.certificate
        if cert is not None and other_cert is not None and cert.sha256 == other_cert.sha256:
            cert.sha256, cert.issuer = other_cert.sha256, _same(cert.issuer, other_cert.issuer)
            cert.subject_cn = _same(cert.subject_cn, other_cert.subject_cn)
            if cert.san == other_cert.san:
                cert.san[:] = other_cert.san
    http, other_http = m.record(HTTPStage), peer.record(HTTPStage)
    if http is not None and other_http is not None:
        http.body_head = _same(http.body_head, other_http.body_head)
        http.title = _same(http.title, other_http.title)
        http.final_url = _same(http.final_url, other_http.final_url)
        http.body_sha256 = _same(http.body_sha256, other_http.body_sha256)
        headers = other_http.headers
        for name, value in http.headers.items():
            if headers.get(name) == value:
                http.headers[name] = headers[name]


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
    return Result(
        obs, j.verdict, j.reason, control=ctl, version=__version__,
        judged_with=judged_with(fingerprints, throttle_ratio, control),
    )  # fmt: skip


ProgressFn = Callable[[int, int], None]


class Runner:
    """Measures jobs of one config with bounded concurrency, and judges them.

    It holds one :class:`~probes.measurer.Measurer` (built by
    :func:`~probes.measurer.measurer_for` unless given) and never asks which kind it is.
    """

    def __init__(
        self,
        config: Config,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_vantage: int = DEFAULT_PER_VANTAGE,
        pool: MeasuringPool | None = None,
        measurer: Measurer | None = None,
    ) -> None:
        """``pool``: measure local vantages in worker processes (``serve --workers``);
        the runner does not own it and does not close it. ``measurer``: measure with
        this one instead (the bounds and ``pool`` are then its business); the runner
        closes it."""
        self.config = config
        self.fingerprints = FingerprintSet.build(config.fingerprints)
        self._timeout = config.defaults.timeout
        if measurer is None:
            measurer = measurer_for(
                config,
                concurrency=concurrency,
                per_vantage=per_vantage,
                stop_addresses=self.fingerprints.injected_addresses(),
                pool=pool,
                fingerprints=self.fingerprints,
            )
        self.measurer: Measurer = measurer

    async def measure(self, job: Job) -> Measurement:
        """One measurement within the config's budget (and the measurer's bounds)."""
        return await self.measurer.measure(job, self._timeout)

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
        await self.measurer.aclose()

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

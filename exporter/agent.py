"""Agent mode of `serve` (``--agent``) and the hub's agent metrics (docs/agents.md).

An agent is an ordinary `lifeline serve` that runs inside the network being
watched: it measures its own config on its own schedule (its `/metrics`,
`/api/v1/status` and `/api/v1/measurements` work as everywhere) and, with
``--agent``, also answers a hub's ``POST /api/v1/measure``: one measurement
now, from one of its vantages, returned raw (not classified: the hub judges
it against its own control).

The endpoint sits behind the same web config (TLS, basic auth) as every
other, and behind the same SSRF guard as `/probe`: only targets the agent's
own config names, or that its ``probe.allow`` globs admit, are measured.
Anything else is refused with 400 before a packet is sent. A hub is not
trusted to point the agent anywhere; the agent's operator decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.guard import admitted_target  # the one SSRF guard, shared with /probe
from exporter.scheduler import Monitor, rfc3339
from probes import __version__
from probes.config import MAX_BODY_BYTES_LIMIT
from probes.failures import UNKNOWN_PREFIX, Failure
from probes.fingerprints import FingerprintSet
from probes.measure import measure
from probes.model import CANARY_SERVICE, Config, Target, Vantage
from probes.net import VantageNet
from probes.records import Measurement
from probes.remote import MEASURE_PATH, MEASURE_SCHEMA

__all__ = [
    "MAX_TIMEOUT_S",
    "AgentCollector",
    "AgentIdentity",
    "AgentReadiness",
    "add_agent_routes",
]

#: The longest measurement budget a hub may ask for.
MAX_TIMEOUT_S = 120.0
#: Measurements a hub may have in flight at this agent at once (beyond: they wait).
MAX_IN_FLIGHT = 64
#: Longest service name echoed back.
_MAX_SERVICE_CHARS = 100


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who answers: the agent's name (``--agent-name``, default the host name) and version."""

    name: str
    version: str = __version__


@dataclass(frozen=True, slots=True)
class _Ask:
    """One validated ``POST /api/v1/measure`` request."""

    target: Target
    vantage: Vantage
    service: str
    timeout: float
    max_body_bytes: int


def add_agent_routes(
    app: web.Application, monitor: Monitor, identity: AgentIdentity
) -> AgentReadiness:
    """Route ``POST /api/v1/measure`` on ``app``; its networks close with the app.

    Returns the agent's readiness (``/-/ready``), checked from the app's start.
    """
    endpoint = _MeasureEndpoint(monitor, identity)
    app.add_routes([web.post(MEASURE_PATH, endpoint.handle)])
    readiness = AgentReadiness(endpoint)
    app.on_startup.append(readiness.start)
    app.on_cleanup.append(readiness.stop)
    app.on_cleanup.append(endpoint.cleanup)
    return readiness


#: Failures of a readiness check that are the agent's own setup, not its network's
#: answer: its proxy cannot be used, or something lifeline has no name for.
_OWN_FAILURES = (Failure.PROXY_ERROR.value, UNKNOWN_PREFIX.rstrip(": "))
#: Between readiness checks that found a vantage not usable: doubling up to the cap.
READY_RETRY_S, READY_RETRY_MAX_S = 1.0, 60.0


class AgentReadiness:
    """Whether the agent can measure for hubs now (docs/agents.md, "Ready").

    A hub's request is measured at once, not on the schedule, so readiness is
    not the first round (spread over the whole interval) but this: the config
    is loaded, the measure endpoint is routed, and every vantage a hub may ask
    for can be measured from. That is checked the way a hub's request is
    measured: one canary per vantage, at start; it must come back as an
    observation (no ``error``) whose failure, if any, is not the agent's own
    (``proxy_error``, ``unknown_failure``). A canary that the network blocks or
    a shutdown is still a measurement: reporting that is the agent's job. A
    vantage without canaries has nothing to check with and is ready at once.
    Checks that fail are retried (1 s, doubling up to 60 s); once ready, it
    stays ready.
    """

    def __init__(self, endpoint: _MeasureEndpoint) -> None:
        self._endpoint = endpoint
        self.ready = False
        self.checks = 0  # checks made so far (each one measures what is not yet known usable)
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: web.Application) -> None:
        self._task = asyncio.create_task(self._check(), name="lifeline-agent-ready")

    async def stop(self, app: web.Application) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _check(self) -> None:
        delay = READY_RETRY_S
        usable: set[str] = set()
        while True:
            config = self._endpoint.config
            wanted = [v for v in config.vantages if v.agent is None]
            for vantage in wanted:
                if vantage.name not in usable and await self._usable(config, vantage):
                    usable.add(vantage.name)
            self.checks += 1
            if all(v.name in usable for v in wanted):
                self.ready = True
                return
            await asyncio.sleep(delay)
            delay = min(2 * delay, READY_RETRY_MAX_S)

    async def _usable(self, config: Config, vantage: Vantage) -> bool:
        if not config.canaries:
            return True
        try:
            m = await self._endpoint.measure_now(
                config, config.canaries[0], vantage, service=CANARY_SERVICE
            )
        except Exception:  # measure() records failures; anything raised is not measuring
            return False
        if m.error is not None:
            return False
        return not any(
            rec.failure is not None and rec.failure.startswith(_OWN_FAILURES)
            for rec in m.stages.values()
        )


class _MeasureEndpoint:
    """Measures on a hub's request with networks of its own.

    It does not go through the schedule's runner because the hub chooses the
    budget (timeout, body cap) of each measurement; the vantages' networks
    are kept per vantage definition, so a reload that changes a vantage gets
    a fresh one.
    """

    def __init__(self, monitor: Monitor, identity: AgentIdentity) -> None:
        self._monitor = monitor
        self._identity = identity
        self._nets: dict[Vantage, VantageNet] = {}
        self._bound = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._stops: tuple[Config, frozenset[str]] | None = None

    @property
    def config(self) -> Config:
        return self._monitor.config

    async def handle(self, request: web.Request) -> web.Response:
        received = time.monotonic()
        config = self._monitor.config
        ask = _parse(config, await _json_body(request))
        m = await self.measure_now(
            config,
            ask.target,
            ask.vantage,
            service=ask.service,
            budget_s=ask.timeout,
            max_body_bytes=ask.max_body_bytes,
        )
        return web.json_response(self._answer(m, received))

    async def measure_now(
        self,
        config: Config,
        target: Target,
        vantage: Vantage,
        *,
        service: str,
        budget_s: float | None = None,
        max_body_bytes: int | None = None,
    ) -> Measurement:
        """One measurement now, the way a hub's request is measured (bounded, own nets)."""
        async with self._bound:
            return await measure(
                target,
                vantage,
                self._net(config, vantage),
                timeout=config.defaults.timeout if budget_s is None else budget_s,
                max_body_bytes=(
                    config.defaults.max_body_bytes if max_body_bytes is None else max_body_bytes
                ),
                service=service,
                stop_addresses=self._stop_addresses(config),
                fingerprints=FingerprintSet.build(config.fingerprints),  # the agent's own, cached
                body_head_bytes=config.defaults.body_head_bytes,
            )

    def _answer(self, m: Measurement, received: float) -> dict[str, Any]:
        return {
            "schema": MEASURE_SCHEMA,
            "agent": self._identity.name,
            "version": self._identity.version,
            "agent_time": rfc3339(time.time()),
            "agent_elapsed_s": time.monotonic() - received,
            "measurement": m.to_dict(),
        }

    def _net(self, config: Config, vantage: Vantage) -> VantageNet:
        net = self._nets.get(vantage)
        if net is None:
            net = self._nets[vantage] = VantageNet(vantage, ca_file=config.defaults.ca_file)
        return net

    def _stop_addresses(self, config: Config) -> frozenset[str]:
        """Known injected addresses of the current config (built once per config)."""
        if self._stops is None or self._stops[0] is not config:
            stops = FingerprintSet.build(config.fingerprints).injected_addresses()
            self._stops = (config, stops)
        return self._stops[1]

    async def cleanup(self, app: web.Application) -> None:
        nets, self._nets = list(self._nets.values()), {}
        for net in nets:
            await net.aclose()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    return data


def _parse(config: Config, data: dict[str, Any]) -> _Ask:
    """A measure request checked against this agent's config; 400 for anything else.

    The target is admitted exactly as `/probe` admits one (configured, or a
    ``probe.allow`` glob), before anything is resolved or connected.
    """
    url = data.get("target")
    if not isinstance(url, str) or not url.strip():
        raise _bad("target must be a URL")
    admitted_target(config, url.strip())
    vantage = _vantage(config, data.get("vantage"))
    statuses = data.get("expect_status", [])
    throughput = data.get("throughput", False)
    if not isinstance(statuses, list) or not all(_is_status(s) for s in statuses):
        raise _bad("expect_status must be a list of HTTP statuses")
    if not isinstance(throughput, bool):
        raise _bad("throughput must be true or false")
    try:
        target = Target.parse(url.strip(), expect_status=tuple(statuses), throughput=throughput)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return _Ask(
        target=target,
        vantage=vantage,
        service=_service(data.get("service", "")),
        timeout=_number(data, "timeout", config.defaults.timeout, MAX_TIMEOUT_S),
        max_body_bytes=int(
            _number(data, "max_body_bytes", config.defaults.max_body_bytes, MAX_BODY_BYTES_LIMIT)
        ),
    )


def _vantage(config: Config, name: object) -> Vantage:
    if name is None:
        local = [v for v in config.vantages if v.agent is None]
        chosen = next((v for v in local if not v.control), local[0] if local else None)
    elif isinstance(name, str):
        chosen = config.vantage(name)
    else:
        raise _bad("vantage must be a name")
    if chosen is None:
        raise _bad(f"unknown vantage {name!r}")
    if chosen.agent is not None:
        raise _bad(f"vantage {chosen.name!r} is measured by another agent: ask that one")
    return chosen


def _service(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_SERVICE_CHARS:
        raise _bad("service must be a name")
    return value


def _number(data: dict[str, Any], key: str, default: float, most: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{key} must be a number")
    if not 0 < value <= most:
        raise _bad(f"{key} must be greater than 0 and at most {most:g}")
    return float(value)


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


# --- the hub's side: metrics of its agents ----------------------------------------------


class AgentCollector(Collector):
    """``lifeline_agent_clock_skew_seconds`` and ``lifeline_agent_info``, per agent vantage.

    Read at scrape time from the monitor's latest observations (scheduled
    measurements and re-probes); nothing when the config has no agents.
    """

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        remote = [v.name for v in self._monitor.config.vantages if v.agent is not None]
        if not remote:
            return
        latest = _latest_remote(self._monitor.observations.by_key.values())
        skew = GaugeMetricFamily(
            "lifeline_agent_clock_skew_seconds",
            "How far the clock of the vantage's agent is ahead of the hub's (latest answer).",
            labels=["vantage"],
        )
        info = GaugeMetricFamily(
            "lifeline_agent_info",
            "The agent that last answered for the vantage, and its version; always 1.",
            labels=["vantage", "agent", "version"],
        )
        for name in remote:
            m = latest.get(name)
            if m is None or m.clock_skew_s is None:
                continue
            skew.add_metric([name], m.clock_skew_s)
            info.add_metric([name, m.agent or "", m.agent_version or ""], 1)
        yield skew
        yield info


def _latest_remote(measurements: Iterable[Measurement]) -> dict[str, Measurement]:
    """The newest agent-made measurement of each vantage."""
    latest: dict[str, Measurement] = {}
    for m in measurements:
        if m.clock_skew_s is None:
            continue
        current = latest.get(m.vantage)
        if current is None or m.time > current.time:
            latest[m.vantage] = m
    return latest

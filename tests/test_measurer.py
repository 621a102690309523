"""One measurer protocol: agent vantages by their agents, the rest here, within the bounds."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import replace

from probes.classify import AGENT_UNREACHABLE
from probes.config import parse_config
from probes.measurer import Bounded, ByVantage, Job, Measurer
from probes.model import Config, Target, Vantage
from probes.records import Measurement
from probes.runner import Runner


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def hub_config() -> Config:
    port = _closed_port()
    return parse_config(f"""\
version: 1
defaults: {{timeout: 1s}}
vantages:
  - {{name: control, control: true, resolver: 127.0.0.1:{port}}}
  - name: far
    agent: {{url: 'http://127.0.0.1:{port}/', vantage: censored}}
services:
  - name: web
    targets: [dns://open.lifeline.test]
""")


def job(config: Config, vantage: str) -> Job:
    v = config.vantage(vantage)
    assert v is not None
    return Job("web", config.services[0].targets[0], v)


async def test_agent_vantages_are_measured_by_their_agent_the_others_here() -> None:
    config = hub_config()
    async with Runner(config) as runner:
        far, near = await asyncio.gather(
            runner.measure(job(config, "far")), runner.measure(job(config, "control"))
        )
    assert far.vantage == "far" and (far.error or "").startswith(AGENT_UNREACHABLE)
    assert "127.0.0.1" in (far.error or "")  # names the agent it could not reach
    assert near.vantage == "control" and not (near.error or "").startswith(AGENT_UNREACHABLE)
    assert near.dns is not None and not near.dns.ok  # its own resolver, measured here


class Counting:
    """A fake measurer: how many measurements it holds at once, per vantage and in all."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_in_all = 0
        self.timeouts: list[float] = []
        self.closed = 0

    async def measure(self, job: Job, timeout: float) -> Measurement:  # noqa: ASYNC109
        name = job.vantage.name
        self.timeouts.append(timeout)
        self.now[name] += 1
        self.most[name] = max(self.most[name], self.now[name])
        self.most_in_all = max(self.most_in_all, sum(self.now.values()))
        await asyncio.sleep(0.01)
        self.now[name] -= 1
        return Measurement(target=job.target.url, vantage=name, time="2026-01-01T00:00:00Z")

    async def aclose(self) -> None:
        self.closed += 1


def vantage(name: str) -> Vantage:
    return replace(hub_config().vantages[0], name=name, control=False)


def jobs(*vantages: str, each: int) -> list[Job]:
    target = Target.parse("dns://open.lifeline.test")
    return [Job("web", target, vantage(v)) for v in vantages for _ in range(each)]


async def test_the_bounds_hold_in_all_and_per_vantage() -> None:
    inner = Counting()
    bounded = Bounded(inner, concurrency=3, per_vantage=2)
    await asyncio.gather(*(bounded.measure(j, 5.0) for j in jobs("a", "b", each=6)))
    assert inner.most == {"a": 2, "b": 2} and inner.most_in_all == 3
    assert inner.timeouts == [5.0] * 12


async def test_the_measurer_of_a_vantage_is_chosen_once() -> None:
    here, there = Counting(), Counting()
    chosen: list[str] = []

    def choose(v: Vantage) -> Measurer:
        chosen.append(v.name)
        return there if v.name == "far" else here

    routed = ByVantage([vantage("near")], choose, (here, there))
    await asyncio.gather(*(routed.measure(j, 1.0) for j in jobs("near", "far", each=3)))
    assert chosen == ["near", "far"]  # "far" (not in the table) once, when first met
    assert len(here.timeouts) == len(there.timeouts) == 3
    await routed.aclose()
    assert here.closed == there.closed == 1


async def test_a_runner_measures_with_the_measurer_it_is_given_within_the_budget() -> None:
    config = hub_config()
    fake = Counting()
    async with Runner(config, measurer=fake) as runner:
        results = await runner.run_round()
    assert {r.measurement.vantage for r in results} == {"control", "far"}
    assert fake.timeouts == [1.0] * len(results) and fake.closed == 1

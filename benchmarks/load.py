"""One load generator for both exporters: an aiohttp client with a fixed concurrency.

A *run* keeps ``concurrency`` probes in flight against one exporter for a
fixed time, walking the targets in the same order for every exporter, and
records each probe's ``probe_success``. What one probe is differs only in
the requests it takes (see :mod:`benchmarks.configs`):

- ``lifeline`` (and ``lifeline-asyncio``, ``lifeline-window``, ``lifeline-workers``,
  ``lifeline-alt``):
  ``/probe?target=https://NAME:PORT/`` (DNS, TCP, TLS, HTTP);
- ``blackbox``: ``/probe?module=d<i>`` (DNS), then, if it succeeded,
  ``/probe?module=h<i>&target=https://IP:PORT/`` (TCP, TLS, HTTP);
- ``blackbox-http``: the second request only (no DNS: less work than lifeline's).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from benchmarks.farm import Name
from benchmarks.procs import CpuMem, sample

__all__ = ["KINDS", "RunResult", "run_load"]

#: "lifeline-window" is lifeline with its default DNS listening window (the others: none);
#: "lifeline-asyncio" is lifeline on asyncio's own loop (the others: uvloop where installed);
#: "lifeline-alt" is lifeline from another checkout (``--alt-tree``), probed the same way.
KINDS = (
    "lifeline",
    "lifeline-asyncio",
    "lifeline-window",
    "lifeline-workers",
    "lifeline-alt",
    "blackbox",
    "blackbox-http",
)


@dataclass(slots=True)
class RunResult:
    """One timed run against one exporter."""

    kind: str
    seconds: float
    probes: int
    cpu_s: float  # the exporter's CPU over the run
    errors: int  # requests that did not give a probe_success (HTTP error, bad body)
    far_cpu_s: dict[str, float] = field(default_factory=dict)  # the far end's, by part
    outcomes: dict[int, set[int]] = field(
        default_factory=dict
    )  # name index -> probe_success values

    @property
    def rate(self) -> float:
        return self.probes / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_probe_ms(self) -> float:
        return 1000.0 * self.cpu_s / self.probes if self.probes else float("nan")


def _success(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("probe_success "):
            return int(float(line.split()[1]))
    return None


class _Probes:
    """How one probe of each kind is asked for."""

    def __init__(self, base: str, names: list[Name], resolver: str, vantage: str) -> None:
        self.base = base.rstrip("/")
        self.names = names
        self.resolver = resolver
        self.vantage = vantage

    async def _get(self, session: aiohttp.ClientSession, url: str) -> int | None:
        async with session.get(url) as resp:
            text = await resp.text()
            return _success(text) if resp.status == 200 else None

    async def lifeline(self, session: aiohttp.ClientSession, i: int) -> int | None:
        target = quote(self.names[i].url, safe="")
        return await self._get(session, f"{self.base}/probe?target={target}&vantage={self.vantage}")

    async def blackbox_http(self, session: aiohttp.ClientSession, i: int) -> int | None:
        target = quote(self.names[i].ip_url, safe="")
        return await self._get(session, f"{self.base}/probe?module=h{i}&target={target}")

    async def blackbox(self, session: aiohttp.ClientSession, i: int) -> int | None:
        dns = await self._get(session, f"{self.base}/probe?module=d{i}&target={self.resolver}")
        if dns != 1:
            return dns
        return await self.blackbox_http(session, i)


async def run_load(
    kind: str,
    base: str,
    pid: int,
    names: list[Name],
    *,
    resolver: str,
    concurrency: int,
    seconds: float,
    vantage: str = "v0",
    far_pids: dict[str, int] | None = None,
) -> RunResult:
    """Keep ``concurrency`` probes of ``kind`` in flight for ``seconds``; count and time them.

    ``far_pids`` (the far end's processes by part) have their CPU over the run
    recorded too.
    """
    far = far_pids or {}
    probes = _Probes(base, names, resolver, vantage)
    one = {
        "lifeline": probes.lifeline,
        "lifeline-asyncio": probes.lifeline,
        "lifeline-window": probes.lifeline,
        "lifeline-workers": probes.lifeline,
        "lifeline-alt": probes.lifeline,
        "blackbox": probes.blackbox,
        "blackbox-http": probes.blackbox_http,
    }[kind]
    result = RunResult(kind, 0.0, 0, 0.0, 0)
    cursor = 0
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before: CpuMem = sample(pid)
        far_before = {part: sample(p).cpu_s for part, p in far.items()}
        started = time.monotonic()
        end = started + seconds

        async def worker() -> None:
            nonlocal cursor
            while time.monotonic() < end:
                i = cursor % len(names)
                cursor += 1
                try:
                    ok = await one(session, i)
                except (aiohttp.ClientError, TimeoutError):
                    ok = None
                if ok is None:
                    result.errors += 1
                    continue
                result.probes += 1
                result.outcomes.setdefault(i, set()).add(ok)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.monotonic() - started
        result.cpu_s = sample(pid).cpu_s - before.cpu_s
        result.far_cpu_s = {part: sample(p).cpu_s - far_before[part] for part, p in far.items()}
    return result
